"""Image data: fixed splits and training subsets (``splits``), the sources that build them (``digits``,
``glyphs``, ``folder``, ``manifest``, ``torchvision_sets``, chosen by ``dataset.kind`` in ``registry``),
the up-front file scan (``scan``), preprocessing (``transforms``), the data order (``sampler``) and the
loaders (``loaders``).

Import the modules themselves (``from transferlab.data.registry import load_splits``): this package
re-exports nothing.
"""
