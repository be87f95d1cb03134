"""End-to-end smoke: a user added with radiusd-admin logs in over real UDP."""

from tests.support import admin


def test_added_user_is_accepted_with_framed_ip(make_server, radius_client):
    server = make_server()
    admin(server.config_path, "user", "add", "alice", "--password-stdin", "--framed-ip", "10.1.2.3",
          stdin="correct-horse-1\n")
    client = radius_client(server.auth_port)
    _, reply = client.send(client.access_request("alice", "correct-horse-1"))
    assert reply.code == 2
    assert reply["Framed-IP-Address"] == ["10.1.2.3"]
