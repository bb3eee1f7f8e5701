"""AWS behaviour that the local face reproduces in front of moto."""
