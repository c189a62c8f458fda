"""MIAVLM (Tan et al., ICASSP 2025): yes/no questions about an object's attributes, answered
from any number (1..9) of views in any order. See README.md beside this file.

  config.py   MIAVLMConfig (the network), BenchmarkConfig and the attribute vocabulary
  model.py    the PyTorch network, the tiled baseline's input, camera image -> view, weights files
  data.py     the simulated benchmark: scenes, views, balanced yes/no questions (benchmark.npz)
  train.py    training (and the ablations: --no-negatives, --variant tiled)
  eval.py     `ros-vla eval miavlm`: HoOA, positive and negative accuracy on the held-out scenes
  bench.py    `ros-vla bench miavlm`: latency by number of views
  checker.py  AttributeChecker: what attribute_checker_node runs, without ROS
  figure.py   the model card's picture (views and their fusion weights)

Importing this package imports nothing heavy; torch comes with model.py.
"""
