"""Security primitives (tokens, JWT); no HTTP, no WebSocket."""
