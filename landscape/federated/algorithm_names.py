"""The names of the six federated algorithms, in the paper's order (the rows of the A10 table).

Apart from :mod:`landscape.federated.algorithms` so that the table jobs need no torch.
"""

ALGORITHMS: tuple[str, ...] = ("fedavg", "fedprox", "moon", "feddyn", "fedpan", "fedsign")
