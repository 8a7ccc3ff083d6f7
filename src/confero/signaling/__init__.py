"""Ant Media's WebSocket protocol: sessions, typed messages, command handlers. Never RTP."""
