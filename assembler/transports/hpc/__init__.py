"""The HPC formats: Apptainer's SIF (:mod:`.sif_format` the container, :mod:`.sif` the image
streamed into it, :mod:`.sif_front` its definition and metadata, :mod:`.apptainer` what
Apptainer reads, :mod:`.sif_publish` ``oras://``) and Enroot's squashfs (:mod:`.enroot`),
both written through the streamed squashfs of :mod:`.squashfs`."""
