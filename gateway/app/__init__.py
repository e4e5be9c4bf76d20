"""The composition root: builds the parts from the config and runs them."""
