"""ProjectService over a real channel: CRUD, limits, pagination, force delete, isolation."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from agenttasks.v1 import agents_pb2, tasks_pb2
from agenttasks.v1 import projects_pb2 as pb

from .helpers import raises


def test_create_trims_the_name_and_starts_with_no_tasks(world):
    project = world.admin.projects.CreateProject(
        pb.CreateProjectRequest(name="  Docs  ", description="All the docs")
    ).project
    assert (project.name, project.description, project.task_count) == ("Docs", "All the docs", 0)
    assert project.team_id == world.id
    assert project.id[0].isalpha() and project.id.isalnum() and project.id.islower()


def test_create_validates_every_field_at_once(world):
    body = raises(
        "VALIDATION_ERROR",
        world.admin.projects.CreateProject,
        pb.CreateProjectRequest(name="   ", description="d" * 10_001),
    )
    assert body.violations == ["name", "description"]
    raises(
        "VALIDATION_ERROR",
        world.admin.projects.CreateProject,
        pb.CreateProjectRequest(name="n" * 201),
        message="name: must be at most 200 characters after trimming",
    )


def test_create_with_a_request_id_happens_once(world):
    request = pb.CreateProjectRequest(name="Once", request_id="create-once-1")
    first = world.admin.projects.CreateProject(request).project
    again = world.admin.projects.CreateProject(request).project
    assert again.id == first.id
    listed = world.admin.projects.ListProjects(pb.ListProjectsRequest()).projects
    assert [p.id for p in listed] == [first.id]


def test_get_of_another_teams_project_is_not_found(world, other_world):
    theirs = other_world.project("Secret")
    raises(
        "NOT_FOUND",
        world.admin.projects.GetProject,
        pb.GetProjectRequest(project_id=theirs.id),
        message=f"project {theirs.id!r} not found",
    )
    raises(
        "NOT_FOUND",
        world.admin.projects.GetProject,
        pb.GetProjectRequest(project_id="cnothere"),
        message="project 'cnothere' not found",
    )


def test_update_with_mask_writes_only_the_named_fields(world):
    project = world.project("Before")
    updated = world.admin.projects.UpdateProject(
        pb.UpdateProjectRequest(
            project=pb.Project(id=project.id, name="After", description="new"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    ).project
    assert (updated.name, updated.description) == ("Before", "new")
    renamed = world.admin.projects.UpdateProject(
        pb.UpdateProjectRequest(project=pb.Project(id=project.id, name="After"))
    ).project
    assert (renamed.name, renamed.description) == ("After", "new")


def test_update_of_another_teams_project_is_not_found(world, other_world):
    theirs = other_world.project("Theirs")
    raises(
        "NOT_FOUND",
        world.admin.projects.UpdateProject,
        pb.UpdateProjectRequest(project=pb.Project(id=theirs.id, name="Mine now")),
    )
    assert (
        other_world.admin.projects.GetProject(
            pb.GetProjectRequest(project_id=theirs.id)
        ).project.name
        == "Theirs"
    )


def test_delete_refuses_a_project_with_tasks_unless_forced(world):
    project = world.project("Busy")
    for title in ("one", "two"):
        world.admin.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(project_id=project.id, title=title)
        )
    got = world.admin.projects.GetProject(pb.GetProjectRequest(project_id=project.id)).project
    assert got.task_count == 2
    raises(
        "PROJECT_NOT_EMPTY",
        world.admin.projects.DeleteProject,
        pb.DeleteProjectRequest(project_id=project.id),
    )
    world.admin.projects.DeleteProject(pb.DeleteProjectRequest(project_id=project.id, force=True))
    raises(
        "NOT_FOUND", world.admin.projects.GetProject, pb.GetProjectRequest(project_id=project.id)
    )
    tasks = world.admin.tasks.ListTasks(tasks_pb2.ListTasksRequest()).tasks
    assert list(tasks) == []


def test_delete_of_an_empty_project(world):
    project = world.project("Empty")
    assert world.admin.projects.DeleteProject(pb.DeleteProjectRequest(project_id=project.id)) == (
        pb.DeleteProjectResponse()
    )
    raises(
        "NOT_FOUND",
        world.admin.projects.DeleteProject,
        pb.DeleteProjectRequest(project_id=project.id),
    )


def test_list_pages_oldest_first_with_stable_tokens(world):
    made = [world.project(f"P{i}").id for i in range(7)]
    seen, token = [], ""
    while True:
        page = world.admin.projects.ListProjects(
            pb.ListProjectsRequest(page_size=3, page_token=token)
        )
        assert len(page.projects) <= 3
        seen += [p.id for p in page.projects]
        token = page.next_page_token
        if not token:
            break
    assert seen == made


def test_list_rejects_negative_sizes_and_foreign_tokens(world):
    raises(
        "VALIDATION_ERROR", world.admin.projects.ListProjects, pb.ListProjectsRequest(page_size=-1)
    )
    body = raises(
        "VALIDATION_ERROR",
        world.admin.projects.ListProjects,
        pb.ListProjectsRequest(page_token="not-a-token"),
    )
    assert body.violations == ["page_token"]


def test_list_clamps_large_page_sizes_to_100(world):
    for i in range(101):
        world.admin.projects.CreateProject(pb.CreateProjectRequest(name=f"P{i}"))
    page = world.admin.projects.ListProjects(pb.ListProjectsRequest(page_size=1000))
    assert len(page.projects) == 100 and page.next_page_token
    default = world.admin.projects.ListProjects(pb.ListProjectsRequest())
    assert len(default.projects) == 50


def test_agents_may_read_projects(world):
    project = world.project("Readable")
    _, agent = world.agent()
    assert (
        agent.projects.GetProject(pb.GetProjectRequest(project_id=project.id)).project.id
        == project.id
    )
    assert [p.id for p in agent.projects.ListProjects(pb.ListProjectsRequest()).projects] == [
        project.id
    ]


def test_nul_characters_and_impossible_ids_get_the_same_answer_on_every_backend(world):
    body = raises(
        "VALIDATION_ERROR",
        world.admin.projects.CreateProject,
        pb.CreateProjectRequest(name="a\x00b", description="c\x00d", request_id="r\x00"),
    )
    assert body.violations == ["name", "description", "request_id"]
    for bad_id in ("c\x00x", "UPPER", "has space", "x" * 40):
        raises(
            "NOT_FOUND", world.admin.projects.GetProject, pb.GetProjectRequest(project_id=bad_id)
        )
        raises(
            "NOT_FOUND",
            world.admin.agents.GetAgent,
            agents_pb2.GetAgentRequest(agent_id=bad_id),
        )


def test_a_forged_page_token_with_huge_numbers_is_a_validation_error(world):
    import base64

    for forged in (b'[1e400, 1, "x"]', b'[99999999999999999999999, 1, "x"]', b'[-1, 1, "x"]'):
        token = base64.urlsafe_b64encode(forged).decode().rstrip("=")
        body = raises(
            "VALIDATION_ERROR",
            world.admin.projects.ListProjects,
            pb.ListProjectsRequest(page_token=token),
        )
        assert body.violations == ["page_token"]
