"""The Python bindings, exercised as an app would: offline edits on a database file, the change
observer, the projection queries, errors, and a conflict between two devices.

Run with scripts/test-bindings.sh, which regenerates the bindings from the library it has just built.
"""

import asyncio
import datetime
import gc
import os
import queue
import threading

import pytest

import tandem

UTC = datetime.timezone.utc


def open_engine(tmp_path, user, name="phone", file=None):
    return tandem.Engine.open(
        str(tmp_path / (file or f"{user}-{name}.db")),
        tandem.EngineConfig(user_id=user, device_name=name, durability=tandem.Durability.FULL),
    )


def new_plan(engine):
    return engine.create_plan(
        tandem.NewPlan(
            mentee="ana",
            coaches=["carla"],
            program="First-year success",
            term="Spring 2025",
        )
    )


class Recorder(tandem.DocumentObserver):
    """Collects document changes and the threads they arrived on."""

    def __init__(self):
        self.changes = queue.Queue()

    def document_changed(self, change):
        self.changes.put((change, threading.get_ident()))

    def next(self):
        return self.changes.get(timeout=5)


def test_log_a_session_offline_and_read_it_back(tmp_path):
    engine = open_engine(tmp_path, "carla")
    plan = new_plan(engine)
    start = datetime.datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
    session = engine.log_session(
        tandem.NewSession(
            plan=plan,
            coach="carla",
            mentee="ana",
            start=start,
            duration_minutes=45,
            mode=tandem.SessionMode.IN_PERSON,
            topics=["time management"],
            notes="Exam schedule.",
            mood=4,
            action_items=[tandem.NewActionItem(text="Book tutoring", owner="ana", due="2025-03-07")],
            follow_up="2025-03-10",
        )
    )

    log = engine.session(session)
    assert log.plan == plan
    assert log.start == start
    assert log.mode == tandem.SessionMode.IN_PERSON
    assert log.notes == "Exam schedule."
    assert log.follow_up == "2025-03-10"
    assert [item.text for item in log.action_items] == ["Book tutoring"]

    # Reopening the file finds everything: each edit returned only once it was on disk.
    del engine
    again = open_engine(tmp_path, "carla")
    assert again.session(session).notes == "Exam schedule."


def test_edit_a_goal_and_observe_the_change_off_the_calling_thread(tmp_path):
    engine = open_engine(tmp_path, "ana")
    recorder = Recorder()
    engine.set_document_observer(recorder)
    plan = new_plan(engine)
    created, _ = recorder.next()
    assert created.document == plan
    assert created.kind == tandem.DocKind.PLAN
    assert created.origin == tandem.ChangeOrigin.LOCAL

    goal = engine.add_goal(plan, tandem.NewGoal(title="Pass Calculus I", category="academic"))
    recorder.next()
    engine.edit_goal(plan, goal, tandem.GoalEdit(title="Pass Calculus I with a B"))
    engine.update_progress(plan, goal, 40)

    edited, thread = recorder.next()
    assert edited.document == plan
    assert [c.description for c in edited.changes] and edited.changes[-1].author == "ana"
    assert thread != threading.get_ident()
    progressed, _ = recorder.next()
    assert len(progressed.changes) == 1

    read = engine.plan(plan).goals[0]
    assert (read.title, read.progress) == ("Pass Calculus I with a B", 40)


def test_projection_queries(tmp_path):
    engine = open_engine(tmp_path, "carla")
    plan = new_plan(engine)
    goal = engine.add_goal(plan, tandem.NewGoal(title="Pass Calculus I"))
    engine.add_milestone(plan, goal, tandem.NewMilestone(title="Problem set 3", due="2025-03-05"))
    engine.add_milestone(plan, goal, tandem.NewMilestone(title="Midterm", due="2025-03-20"))
    session = engine.log_session(
        tandem.NewSession(
            plan=plan,
            coach="carla",
            mentee="ana",
            start=datetime.datetime(2025, 3, 4, 10, tzinfo=UTC),
            duration_minutes=30,
            mode=tandem.SessionMode.VIDEO,
            action_items=[tandem.NewActionItem(text="Email the professor", owner="ana")],
        )
    )

    this_week = engine.milestones_due(tandem.MilestonesDueQuery(since="2025-03-03", until="2025-03-10"))
    assert [m.title for m in this_week] == ["Problem set 3"]

    open_items = engine.open_action_items_of_mentee("ana")
    assert [i.text for i in open_items] == ["Email the professor"]
    engine.tick_action_item(session, open_items[0].id, True)
    assert engine.open_action_items_of_mentee("ana") == []

    march = engine.sessions_between(
        tandem.SessionsBetweenQuery(
            since=datetime.datetime(2025, 3, 1, tzinfo=UTC),
            until=datetime.datetime(2025, 4, 1, tzinfo=UTC),
        )
    )
    assert [s.id for s in march] == [session]
    assert [p.id for p in engine.plans_of_mentee("ana")] == [plan]


def test_errors_an_app_can_act_on(tmp_path):
    engine = open_engine(tmp_path, "carla")
    plan = new_plan(engine)
    with pytest.raises(tandem.ApiError.InvalidInput):
        engine.plan("not a document id")
    with pytest.raises(tandem.ApiError.InvalidInput):
        engine.add_goal(plan, tandem.NewGoal(title="x", target_date="next tuesday"))
    goal = engine.add_goal(plan, tandem.NewGoal(title="Pass Calculus I"))
    with pytest.raises(tandem.ApiError.InvalidInput):
        engine.update_progress(plan, goal, 101)
    with pytest.raises(tandem.ApiError.NotFound):
        engine.update_progress(plan, "no-such-goal", 10)
    other_device = open_engine(tmp_path, "carla", "tablet")
    with pytest.raises(tandem.ApiError.NotFound):
        other_device.plan(plan)  # a valid id this device does not hold (yet)
    with pytest.raises(tandem.ApiError.InvalidInput):
        open_engine(tmp_path, "someone-else", file="carla-phone.db")  # the file belongs to carla


def test_an_encrypted_database_hides_notes_and_needs_its_key(tmp_path):
    secret = "MARKER-2c1e: thinking of leaving the program"
    path = tmp_path / "carla-secure.db"

    def open_with(key):
        return tandem.Engine.open(
            str(path),
            tandem.EngineConfig(
                user_id="carla",
                device_name="phone",
                durability=tandem.Durability.FULL,
                encryption_key=key,
            ),
        )

    key = os.urandom(32)
    engine = open_with(key)
    plan = new_plan(engine)
    notes = engine.create_private_notes(
        tandem.NewNotes(coach="carla", mentee="ana", plan=plan, text=secret)
    )
    del engine
    gc.collect()
    files = list(tmp_path.glob("carla-secure.db*"))
    assert files
    for file in files:
        assert secret.encode() not in file.read_bytes(), file
    with pytest.raises(tandem.ApiError.Storage):
        open_with(os.urandom(32))  # the wrong key
    with pytest.raises(tandem.ApiError.InvalidInput):
        open_with(b"too short")
    assert open_with(key).private_notes(notes).text == secret


def test_concurrent_edits_on_two_devices_show_as_a_conflict(tmp_path):
    """Two devices exchange changes out of band (no relay): both set the same goal's target date
    while apart, and after merging both see the conflict with both values."""
    coach = open_engine(tmp_path, "carla")
    mentee = open_engine(tmp_path, "ana")
    plan = new_plan(coach)
    goal = coach.add_goal(plan, tandem.NewGoal(title="Pass Calculus I"))
    mentee.apply_changes(plan, coach.export_document(plan))

    coach.set_goal_target_date(plan, goal, "2025-05-01")
    mentee.set_goal_target_date(plan, goal, "2025-06-01")
    recorder = Recorder()
    coach.set_document_observer(recorder)
    coach.apply_changes(plan, mentee.export_document(plan))
    mentee.apply_changes(plan, coach.export_document(plan))

    merged, _ = recorder.next()
    assert merged.origin == tandem.ChangeOrigin.REMOTE
    assert [c.author for c in merged.changes] == ["ana"]
    for engine in (coach, mentee):
        conflicts = engine.conflicts(plan)
        assert len(conflicts) == 1
        assert conflicts[0].path[-1] == "targetDate"
        assert sorted(v.value for v in conflicts[0].values) == ["2025-05-01", "2025-06-01"]
        assert sorted(v.author for v in conflicts[0].values) == ["ana", "carla"]
    assert coach.plan(plan) == mentee.plan(plan)


def test_an_observer_that_raises_does_not_stop_later_deliveries(tmp_path):
    engine = open_engine(tmp_path, "ana")

    class Flaky(Recorder):
        def document_changed(self, change):
            super().document_changed(change)
            raise RuntimeError("a bug in the app's observer")

    flaky = Flaky()
    engine.set_document_observer(flaky)
    plan = new_plan(engine)
    engine.add_strength(plan, "curious")
    assert flaky.next()[0].document == plan
    assert flaky.next()[0].document == plan


class SyncRecorder(tandem.SyncObserver):
    """Collects sync callbacks."""

    def __init__(self):
        self.statuses = queue.Queue()
        self.saved = queue.Queue()
        self.remote = queue.Queue()

    def sync_status_changed(self, status):
        self.statuses.put(status)

    def saved_to_server(self, document, changes):
        self.saved.put((document, changes))

    def remote_change(self, change):
        self.remote.put(change)

    def remote_change_to(self, document, path_end):
        """Waits for a remote change of `document` touching a path ending in `path_end`."""
        while True:
            change = self.remote.get(timeout=30)
            if change.document == document and any(p.endswith(path_end) for p in change.paths):
                return change


def sync(engine):
    return asyncio.run(engine.sync_now(30_000))


def test_two_devices_sync_through_a_real_relay_and_read_the_conflict(tmp_path, relay):
    """A coach and a mentee, each with a token issued by `tandem-server admin`, sync a plan through
    a relay process; both set the same goal's target date while offline, sync, and read the same
    conflict with both values."""

    def open_synced(user):
        return tandem.Engine.open(
            str(tmp_path / f"{user}-synced.db"),
            tandem.EngineConfig(
                user_id=user,
                device_name=f"{user}'s phone",
                durability=tandem.Durability.FULL,
                relay_url=relay.url,
                token=relay.token(user),
            ),
        )

    coach, mentee = open_synced("carla"), open_synced("ana")
    coach_sync, mentee_sync = SyncRecorder(), SyncRecorder()
    coach.set_sync_observer(coach_sync)
    mentee.set_sync_observer(mentee_sync)
    with pytest.raises(tandem.ApiError.Offline):
        sync(coach)  # not started yet

    # The coach creates the plan and uploads it; the mentee follows it and receives it.
    plan = new_plan(coach)
    goal = coach.add_goal(plan, tandem.NewGoal(title="Pass Calculus I"))
    assert coach.sync_status().pending_changes >= 2  # made offline
    coach.start_sync()
    sync(coach)
    document, saved = coach_sync.saved.get(timeout=30)
    assert document == plan and saved
    assert all(coach.is_saved_to_server(entry.hash) for entry in coach.history(plan))
    mentee.follow(plan)
    mentee.start_sync()
    sync(mentee)
    assert mentee.plan(plan).goals[0].title == "Pass Calculus I"
    coach.stop_sync()
    mentee.stop_sync()
    assert coach.sync_status().connection == tandem.ConnectionState.OFFLINE

    # Apart, both set the goal's target date.
    coach.set_goal_target_date(plan, goal, "2025-05-01")
    mentee.set_goal_target_date(plan, goal, "2025-06-01")
    assert coach.sync_status().pending_changes == 1
    mentee_edit = mentee.history(plan)[-1].hash
    assert mentee.is_saved_to_server(mentee_edit) is False

    coach_documents = Recorder()
    coach.set_document_observer(coach_documents)
    coach.start_sync()
    mentee.start_sync()
    for engine in (coach, mentee, coach, mentee):
        sync(engine)
    # Each hears of the other's edit (sync_now may finish before the relay forwards it).
    coach_sync.remote_change_to(plan, "targetDate")
    mentee_sync.remote_change_to(plan, "targetDate")
    # The coach's document observer is told too, with the mentee's change as history lists it.
    while True:
        change, _ = coach_documents.next()
        if change.origin == tandem.ChangeOrigin.REMOTE and change.document == plan:
            break
    assert change.kind == tandem.DocKind.PLAN
    assert [(entry.hash, entry.author) for entry in change.changes] == [(mentee_edit, "ana")]

    assert mentee.is_saved_to_server(mentee_edit) is True
    for engine in (coach, mentee):
        status = engine.sync_status()
        assert status.connection == tandem.ConnectionState.CONNECTED
        assert (status.pending_documents, status.pending_changes) == (0, 0)
        assert status.last_synced_at is not None
        conflicts = engine.conflicts(plan)
        assert len(conflicts) == 1
        assert conflicts[0].path[-1] == "targetDate"
        assert sorted(v.value for v in conflicts[0].values) == ["2025-05-01", "2025-06-01"]
        assert sorted(v.author for v in conflicts[0].values) == ["ana", "carla"]
    assert coach.plan(plan) == mentee.plan(plan)
    statuses = [coach_sync.statuses.get(timeout=5) for _ in range(coach_sync.statuses.qsize())]
    assert tandem.ConnectionState.CONNECTED in [s.connection for s in statuses]
    coach.stop_sync()
    mentee.stop_sync()


def test_a_fresh_device_sees_the_fetch_progress_reach_every_document(tmp_path, relay):
    """The coach uploads 20 plans; the mentee's fresh device follows them and gets them from the
    relay as snapshots: its status (also as the observer hears it) counts every document and byte
    the relay announced as stored, and every plan reads back."""

    def open_synced(user):
        return tandem.Engine.open(
            str(tmp_path / f"{user}-fetch.db"),
            tandem.EngineConfig(
                user_id=user,
                device_name=f"{user}'s phone",
                durability=tandem.Durability.FULL,
                relay_url=relay.url,
                token=relay.token(user),
            ),
        )

    coach = open_synced("carla")
    plans = [new_plan(coach) for _ in range(20)]
    coach.start_sync()
    sync(coach)

    mentee = open_synced("ana")
    recorder = SyncRecorder()
    mentee.set_sync_observer(recorder)
    assert mentee.sync_status().fetch == tandem.FetchProgress(
        documents_done=0, documents_total=0, bytes_done=0, bytes_total=0
    )
    for plan in plans:
        mentee.follow(plan)
    mentee.start_sync()
    status = sync(mentee)

    fetch = status.fetch
    assert fetch.documents_done == fetch.documents_total == len(plans)
    assert fetch.bytes_done == fetch.bytes_total > 0
    for plan in plans:
        assert mentee.plan(plan).mentee == "ana"
    # The observer heard the progress with the status, ending at the final figures.
    heard = []
    while True:
        try:
            heard.append(recorder.statuses.get(timeout=5).fetch)
        except queue.Empty:
            break
        if heard[-1] == fetch:
            break
    assert heard[-1] == fetch, heard
    coach.stop_sync()
    mentee.stop_sync()


def test_a_refused_token_is_access_denied(tmp_path, relay):
    """The relay refuses a forged token at the upgrade with 401: the app hears `AccessDenied`
    (sign in again), not `Offline` (wait for the network)."""
    engine = tandem.Engine.open(
        str(tmp_path / "forged.db"),
        tandem.EngineConfig(
            user_id="ana",
            device_name="phone",
            durability=tandem.Durability.FULL,
            relay_url=relay.url,
            token="forged",
        ),
    )
    engine.start_sync()
    with pytest.raises(tandem.ApiError.AccessDenied):
        asyncio.run(engine.sync_now(10_000))
    engine.stop_sync()
