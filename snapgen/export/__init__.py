"""Model export: Core ML (``snapgen.export.coreml``) for on-device latency (Mac, iPhone)."""
