"""The registry client (``docker://`` and ``oras://`` hosts): requests, logins, blobs, uploads, referrers."""
