"""`python -m meshtrace.document > docs/config-document.schema.json`: print the config
document's JSON schema, generated from the contract's dataclasses."""

import json

from meshtrace.document import Document, json_schema

print(json.dumps(json_schema(Document), indent=2))
