"""Inputs of the training jobs: labelled manifests, ground truth, training material."""
