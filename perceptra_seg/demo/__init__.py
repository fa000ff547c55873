"""The offline demo: a tiny SAM trained on synthetic shapes, its scene generator and quality metrics.

``segmentor-cli demo --out DIR`` segments the shipped sample image with ``Segmentor(model="demo")``.
The demo model only knows flat and hollow shapes on textured backgrounds; it is not meant for real photos.
"""
