"""An OpenTelemetry-Collector-compatible trace pipeline: receivers -> processors -> exporters,
assembled from the Collector's own YAML. Each component type is a folder (or module) with its
config, factory and defaults, registered by type name in `registry`."""
