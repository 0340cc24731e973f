"""One walk through a loaded manifest (``walk``): its bases and sources (``obtain``), its
steps decided once each, the image's layers stacked (``layerstack``), and the mode a plan
or a build walks in with the services it is built from (``modes``)."""
