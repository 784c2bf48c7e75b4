"""Parses OpenMetrics text from stdin with the Prometheus project's own Python parser (strict:
it rejects malformed exposition) and prints every sample as one JSON object per line:
{"family", "type", "name", "labels", "value"}.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(
                json.dumps(
                    {
                        "family": family.name,
                        "type": family.type,
                        "name": sample.name,
                        "labels": sample.labels,
                        "value": sample.value,
                    }
                )
            )


if __name__ == "__main__":
    main()
