"""Extensions: components outside pipelines (health_check; the query extension lives in meshtrace/query)."""
