"""The one Logger, Tracer and Metrics every module imports."""

from aws_lambda_powertools import Logger, Metrics, Tracer

NAMESPACE = "img2video"

logger = Logger(service="img2video")
tracer = Tracer(service="img2video")
metrics = Metrics(namespace=NAMESPACE, service="img2video")
