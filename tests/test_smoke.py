from agenttasks.v1 import teams_pb2

from .helpers import raises


def test_who_am_i(world):
    me = world.admin.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    assert me.team_id == world.id
    assert me.token_kind == teams_pb2.TOKEN_KIND_TEAM_API_KEY


def test_no_token(world):
    raises(
        "UNAUTHORIZED",
        world.client(None).teams.WhoAmI,
        teams_pb2.WhoAmIRequest(),
        message="Invalid or missing token",
    )
