"""The seed's demo services (Sidecar 自动注入追踪, 应用级 OTLP 集成): a frontend whose `/api/data`
calls the backend's `/api/users`, which queries a SQLite database. Run them with
`python -m meshtrace.demo.frontend` and `python -m meshtrace.demo.backend`; `meshtrace up` runs
them behind sidecars."""
