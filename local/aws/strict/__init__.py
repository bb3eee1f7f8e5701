"""The strict face: refusals AWS makes that moto does not (service constraints, and later IAM)."""
