"""The faust stream worker of the processor role."""
