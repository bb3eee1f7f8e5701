#!/bin/sh
# SageMaker training starts the image as `<image> train`: run the training job.
exec python3 -m jobs.train "$@"
