"""``python -m perceptra_seg.cli``: the same as the ``segmentor-cli`` console script."""

from perceptra_seg.cli import main

main()
