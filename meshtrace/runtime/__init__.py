"""`meshtrace up`: the local mesh. Reads Kubernetes-style YAML, plans processes (control plane,
collector, ingress gateway, app + sidecar per replica, each replica on its own loopback
address), starts them in readiness order and supervises them until Ctrl-C."""
