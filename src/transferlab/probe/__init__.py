"""The linear probe solved to convergence: multinomial logistic regression on cached features by full-batch
L-BFGS in torch, its L2 strength chosen on the validation split. Pure torch, no Lightning.

``options`` (what the config asks for), ``solver`` (one fit at one strength), ``search`` (the strength
chosen on validation, warm-started along the path). Import the modules themselves: this package
re-exports nothing.
"""
