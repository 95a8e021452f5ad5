"""Keyset pagination of ListTasks stays exact while other clients insert tasks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agenttasks.v1 import tasks_pb2 as pb

pytestmark = pytest.mark.slow

EXISTING = 1_000
PAGE_SIZE = 37
INSERTERS = 4


def list_all(world, **filters) -> list[pb.Task]:
    found, token = [], ""
    while True:
        request = pb.ListTasksRequest(page_size=100, page_token=token, **filters)
        response = world.admin.tasks.ListTasks(request)
        found.extend(response.tasks)
        token = response.next_page_token
        if not token:
            return found


def create_many(world, project_id: str, count: int) -> list[pb.Task]:
    """`count` tasks, created by several connections at once."""

    def create(n: int) -> pb.Task:
        request = pb.CreateTaskRequest(project_id=project_id, title=f"existing {n}")
        return world.admin.tasks.CreateTask(request).task

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, range(count)))


class Inserters:
    """Threads that keep creating tasks until stopped; the lister waits for new ones."""

    def __init__(self, world, project_ids: list[str]) -> None:
        self.world = world
        self.project_ids = project_ids
        self.stop = threading.Event()
        self.changed = threading.Condition()
        self.inserted: list[pb.Task] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(INSERTERS)]

    def _run(self, n: int) -> None:
        made = 0
        try:
            while not self.stop.is_set():
                project_id = self.project_ids[made % len(self.project_ids)]
                request = pb.CreateTaskRequest(project_id=project_id, title=f"new {n}.{made}")
                task = self.world.admin.tasks.CreateTask(request).task
                made += 1
                with self.changed:
                    self.inserted.append(task)
                    self.changed.notify_all()
        except BaseException as error:  # reported by the test, never swallowed
            with self.changed:
                self.errors.append(error)
                self.changed.notify_all()

    def wait_for_more_than(self, count: int) -> int:
        """Blocks until more than `count` tasks were inserted; returns how many there are."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.inserted) > count or self.errors, timeout=60)
            assert not self.errors, self.errors
            assert len(self.inserted) > count, "the inserters stopped making progress"
            return len(self.inserted)

    def __enter__(self) -> Inserters:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        assert not self.errors, self.errors


def list_while_inserting(world, inserters: Inserters, **filters) -> list[pb.Task]:
    """Lists every page; before each next page, more tasks have been inserted."""
    seen: list[pb.Task] = []
    token = ""
    inserted = 0
    while True:
        request = pb.ListTasksRequest(page_size=PAGE_SIZE, page_token=token, **filters)
        response = world.admin.tasks.ListTasks(request)
        seen.extend(response.tasks)
        token = response.next_page_token
        if not token:
            return seen
        assert len(response.tasks) == PAGE_SIZE
        inserted = inserters.wait_for_more_than(inserted)


def test_listing_1000_tasks_page_by_page_while_others_insert_sees_each_once_and_misses_none(
    world,
):
    project = world.project("Big")
    existing = create_many(world, project.id, EXISTING)

    with Inserters(world, [project.id]) as inserters:
        seen = list_while_inserting(world, inserters)

    seen_ids = [task.id for task in seen]
    assert len(seen_ids) == len(set(seen_ids)), "a task was listed twice"
    # Every task that existed before the listing began, at the front, in the order a
    # quiet listing gives them.
    existing_ids = {task.id for task in existing}
    assert set(seen_ids[:EXISTING]) == existing_ids
    quiet = [task.id for task in list_all(world) if task.id in existing_ids]
    assert seen_ids[:EXISTING] == quiet
    # Whatever was inserted meanwhile and did show up came after them, oldest first.
    inserted_ids = {task.id for task in inserters.inserted}
    assert set(seen_ids[EXISTING:]) <= inserted_ids
    created = [task.created_at.ToMicroseconds() for task in seen]
    assert created == sorted(created)
    # The walk really did overlap the inserts: at least one per page turn.
    assert len(inserters.inserted) >= EXISTING // PAGE_SIZE


def test_a_filtered_listing_stays_exact_while_tasks_are_inserted_in_and_out_of_the_filter(world):
    listed = world.project("Listed")
    other = world.project("Other")
    existing = create_many(world, listed.id, 300)
    create_many(world, other.id, 100)

    with Inserters(world, [listed.id, other.id]) as inserters:
        seen = list_while_inserting(world, inserters, project_id=listed.id)

    seen_ids = [task.id for task in seen]
    assert len(seen_ids) == len(set(seen_ids))
    existing_ids = {task.id for task in existing}
    quiet = [task.id for task in list_all(world, project_id=listed.id)]
    assert seen_ids[:300] == [task_id for task_id in quiet if task_id in existing_ids]
    assert {task.project_id for task in seen} == {listed.id}
    new_in_listed = {task.id for task in inserters.inserted if task.project_id == listed.id}
    assert set(seen_ids[300:]) <= new_in_listed
