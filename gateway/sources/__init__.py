"""Where readings come from: MQTT, line-printing serial sensors, Modbus RTU buses."""
