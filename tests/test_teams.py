"""TeamService over a real channel: settings, key rotation with and without grace, WhoAmI."""

from __future__ import annotations

from google.protobuf import duration_pb2, field_mask_pb2

from agenttasks.v1 import teams_pb2

from .helpers import raises


def test_get_team_returns_the_callers_team(world):
    team = world.admin.teams.GetTeam(teams_pb2.GetTeamRequest()).team
    assert (team.id, team.name) == (world.id, "Test team")
    assert team.created_at.seconds > 0
    assert not team.settings.HasField("rate_limit_task_per_minute")
    assert world.admin.teams.GetTeam(teams_pb2.GetTeamRequest(team_id=world.id)).team.id == world.id


def test_get_team_of_another_team_is_forbidden(world, other_world):
    raises(
        "FORBIDDEN",
        world.admin.teams.GetTeam,
        teams_pb2.GetTeamRequest(team_id=other_world.id),
        message="team_id does not match the caller's team",
    )


def test_update_team_writes_the_fields_set_when_the_mask_is_empty(world):
    request = teams_pb2.UpdateTeamRequest(
        team=teams_pb2.Team(
            name="  Renamed  ",
            settings=teams_pb2.TeamSettings(
                rate_limit_task_per_minute=500,
                default_lease_duration=duration_pb2.Duration(seconds=300),
            ),
        )
    )
    team = world.admin.teams.UpdateTeam(request).team
    assert team.name == "Renamed"
    assert team.settings.rate_limit_task_per_minute == 500
    assert not team.settings.HasField("rate_limit_other_per_minute")
    assert team.settings.default_lease_duration.seconds == 300
    assert team.updated_at.ToMicroseconds() >= team.created_at.ToMicroseconds()


def test_update_team_with_a_mask_resets_unset_settings(world):
    world.admin.teams.UpdateTeam(
        teams_pb2.UpdateTeamRequest(
            team=teams_pb2.Team(settings=teams_pb2.TeamSettings(rate_limit_other_per_minute=7))
        )
    )
    team = world.admin.teams.UpdateTeam(
        teams_pb2.UpdateTeamRequest(
            team=teams_pb2.Team(name="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["settings.rate_limit_other_per_minute"]),
        )
    ).team
    assert team.name == "Test team"
    assert not team.settings.HasField("rate_limit_other_per_minute")


def test_update_team_refuses_bad_values_with_one_violation_per_field(world):
    body = raises(
        "VALIDATION_ERROR",
        world.admin.teams.UpdateTeam,
        teams_pb2.UpdateTeamRequest(
            team=teams_pb2.Team(
                name="x" * 201,
                settings=teams_pb2.TeamSettings(rate_limit_task_per_minute=-1),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["name", "settings.rate_limit_task_per_minute"]
            ),
        ),
    )
    assert body.violations == ["team.name", "team.settings.rate_limit_task_per_minute"]


def test_update_team_refuses_unknown_mask_paths(world):
    body = raises(
        "VALIDATION_ERROR",
        world.admin.teams.UpdateTeam,
        teams_pb2.UpdateTeamRequest(
            team=teams_pb2.Team(), update_mask=field_mask_pb2.FieldMask(paths=["id"])
        ),
    )
    assert body.violations == ["update_mask"]


def test_rotating_the_key_stops_the_old_one_at_once(world):
    rotated = world.admin.teams.RotateTeamApiKey(teams_pb2.RotateTeamApiKeyRequest())
    assert rotated.api_key.startswith("tk_") and rotated.api_key != world.key
    raises("UNAUTHORIZED", world.admin.teams.WhoAmI, teams_pb2.WhoAmIRequest())
    fresh = world.client(rotated.api_key)
    assert fresh.teams.WhoAmI(teams_pb2.WhoAmIRequest()).team_id == world.id


def test_rotating_with_a_grace_period_keeps_the_old_key_working_meanwhile(world):
    rotated = world.admin.teams.RotateTeamApiKey(
        teams_pb2.RotateTeamApiKeyRequest(grace_period=duration_pb2.Duration(seconds=3600))
    )
    assert world.admin.teams.WhoAmI(teams_pb2.WhoAmIRequest()).team_id == world.id
    assert world.client(rotated.api_key).teams.WhoAmI(teams_pb2.WhoAmIRequest()).team_id == world.id
    # A second rotation without grace ends the grace of every older key too.
    world.client(rotated.api_key).teams.RotateTeamApiKey(teams_pb2.RotateTeamApiKeyRequest())
    raises("UNAUTHORIZED", world.admin.teams.WhoAmI, teams_pb2.WhoAmIRequest())


def test_grace_period_is_capped_at_a_day(world):
    body = raises(
        "VALIDATION_ERROR",
        world.admin.teams.RotateTeamApiKey,
        teams_pb2.RotateTeamApiKeyRequest(grace_period=duration_pb2.Duration(seconds=86401)),
    )
    assert body.violations == ["grace_period"]


def test_who_am_i_names_the_agent_for_an_agent_token(world):
    agent, client = world.agent("bot")
    me = client.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    assert (me.team_id, me.token_kind, me.agent_id) == (
        world.id,
        teams_pb2.TOKEN_KIND_AGENT,
        agent.id,
    )
