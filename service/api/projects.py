"""ProjectService: requests to domain calls to responses."""

from __future__ import annotations

from agenttasks.v1 import projects_pb2 as pb
from agenttasks.v1 import projects_pb2_grpc

from ..domain import projects
from . import convert
from .door import current_caller

WRITABLE = {
    "name": lambda m: {"name": m.name},
    "description": lambda m: {"description": m.description},
}


class ProjectServicer(projects_pb2_grpc.ProjectServiceServicer):
    def ListProjects(self, request, context):
        rows, next_page = projects.list_projects(
            current_caller(), request.team_id, request.page_size, request.page_token
        )
        return pb.ListProjectsResponse(
            projects=[convert.project(row) for row in rows], next_page_token=next_page
        )

    def GetProject(self, request, context):
        project = projects.get_project(current_caller(), request.project_id)
        return pb.GetProjectResponse(project=convert.project(project))

    def CreateProject(self, request, context):
        project = projects.create_project(
            current_caller(),
            request.team_id,
            request.name,
            request.description,
            request.request_id,
        )
        return pb.CreateProjectResponse(project=convert.project(project))

    def UpdateProject(self, request, context):
        changes = convert.changes_from(request.project, request.update_mask, WRITABLE)
        project = projects.update_project(current_caller(), request.project.id, changes)
        return pb.UpdateProjectResponse(project=convert.project(project))

    def DeleteProject(self, request, context):
        projects.delete_project(current_caller(), request.project_id, request.force)
        return pb.DeleteProjectResponse()
