"""REST API under /{App}/rest/v2 in Ant Media's paths and JSON shapes. Never RTP."""
