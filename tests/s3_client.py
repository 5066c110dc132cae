"""The tests' independent S3 client (boto3): reads back what export-events wrote.

    s3_client.py get KEY FILE       the object's bytes into FILE (exit 3 when missing)
    s3_client.py list PREFIX        the keys under PREFIX, one a line
    s3_client.py uploads PREFIX     the incomplete multipart uploads under PREFIX, one a line
    s3_client.py put KEY FILE       writes FILE at KEY

Endpoint, bucket and keys come from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION and EXPORT_EVENTS_TEST_S3_BUCKET.
"""

import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def main():
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "garage"),
        config=Config(s3={"addressing_style": "path"}),
    )
    bucket = os.environ["EXPORT_EVENTS_TEST_S3_BUCKET"]
    command, arg = sys.argv[1], sys.argv[2]
    if command == "get":
        try:
            body = s3.get_object(Bucket=bucket, Key=arg)["Body"].read()
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                sys.exit(3)
            raise
        with open(sys.argv[3], "wb") as f:
            f.write(body)
    elif command == "list":
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=arg):
            for item in page.get("Contents", []):
                print(item["Key"])
    elif command == "uploads":
        found = s3.list_multipart_uploads(Bucket=bucket, Prefix=arg)
        for upload in found.get("Uploads", []):
            print(upload["Key"])
    elif command == "put":
        with open(sys.argv[3], "rb") as f:
            s3.put_object(Bucket=bucket, Key=arg, Body=f.read())
    else:
        sys.exit(f"unknown command {command}")


main()
