"""`meshtrace render`: production manifests for real Istio and the OpenTelemetry Collector from
the YAML `meshtrace up` runs. `render.render(bundle, options)` is the pure core; `cli.py` writes
its files."""
