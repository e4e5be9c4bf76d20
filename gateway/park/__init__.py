"""What the park is doing: devices, liveness, outages, Wi-Fi usage, history, alerts."""
