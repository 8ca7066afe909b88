"""A10: federated learning under Dirichlet label skew (the Asymmetric Valley paper's FedSign table).

- :mod:`~landscape.federated.split`: the seeded Dirichlet split of a training set over clients.
- :mod:`~landscape.federated.algorithms`: FedAvg, FedProx, MOON, FedDyn, FedPAN and FedSign, each
  a client objective and a server aggregation with its state.
- :mod:`~landscape.federated.runner`: the in-process runner (rounds, participation, local SGD by
  :class:`landscape.sgd.SGD`, size-weighted aggregation, per-round metrics) and the run's HDF5
  file.
- :mod:`~landscape.federated.algorithm_names`: the algorithm names (torch-free, for the tables).
- :mod:`~landscape.federated.table`: the table over seeds and its figures.
"""
