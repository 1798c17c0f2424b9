"""Learning on the job: what the model knows, what it does not, and what cashiers teach it."""
