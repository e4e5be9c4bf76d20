"""For the people at the park: the CLI, doctor, the demo and the simulators."""
