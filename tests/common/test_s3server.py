import boto3

from jobs.common.s3server import EmbeddedS3


def test_up_is_idempotent_and_status_reports_the_server(s3, tmp_path, free_port):
    home = tmp_path / "home"
    port = free_port
    server = EmbeddedS3(home=home, port=port)
    assert server.state() is None
    state = server.up()
    try:
        assert server.up().pid == state.pid  # a second up finds the running one
        env = state.env()
        assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"],
        )  # fmt: skip
        client.create_bucket(Bucket="own-bucket")
        client.put_object(Bucket="own-bucket", Key="k", Body=b"v")
        assert client.get_object(Bucket="own-bucket", Key="k")["Body"].read() == b"v"
        assert (home / "s3" / "data").is_dir()
    finally:
        assert server.down()
    assert server.state() is None
    assert not server.down()
