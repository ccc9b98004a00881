"""The MQTT uplink: batch codec, the broker link, and the sender loop."""
