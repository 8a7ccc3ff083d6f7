"""The model: applications, streams, rooms, peer pairs, tokens. No JSON, no sockets, no RTP."""
