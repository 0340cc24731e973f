"""What the image says of itself: its base (``bases``), its config and annotations
(``config``), labels from facts (``labels``), what a runtime step installed against its
pins (``installed``) and the tests it ships (``imagetests``)."""
