"""Reads an OpenMetrics exposition on stdin with prometheus_client's parser,
which refuses text that does not follow the format, and prints each sample
as one JSON line: its name, labels and value."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
