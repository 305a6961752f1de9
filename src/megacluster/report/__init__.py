"""The edge of megacluster's core: command-line commands (``estimate``, ``validate``, ``catalog``, ``plan``)
and the rich tables they print. No physics lives here; every figure comes from :mod:`megacluster.estimate`,
:mod:`megacluster.search` and :mod:`megacluster.validate`."""
