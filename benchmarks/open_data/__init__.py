"""A worked open-data study: CMS 2011 Z → ee candidates (``make_zee``, ``zee``)."""
