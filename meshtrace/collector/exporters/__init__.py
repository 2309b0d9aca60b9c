"""Exporters: components at the end of pipelines that send spans somewhere."""
