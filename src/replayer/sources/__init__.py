"""Where failures come from: the SQS queue, the Lambda runtime, files and stdin, an archive."""
