// The Kotlin bindings, exercised as an Android app would: offline edits on a database file, the
// change observer, the projection queries, errors, and a conflict between two devices.
//
// A plain main() (no test framework to install): each check throws on failure, and main exits
// non-zero. Compiled and run by scripts/test-bindings.sh against the bindings it just generated.

import java.nio.file.Files
import java.nio.file.Path
import java.time.Instant
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking
import uniffi.tandem.*

fun check(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

fun <T> expectEqual(expected: T, actual: T, what: String) =
    check(expected == actual) { "$what: expected $expected, got $actual" }

inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit) {
    try {
        block()
    } catch (e: Throwable) {
        check(e is E) { "$what: expected ${E::class.simpleName}, got $e" }
        return
    }
    throw AssertionError("$what: expected ${E::class.simpleName}, nothing was thrown")
}

fun openEngine(dir: Path, user: String, file: String = "$user.db"): Engine =
    Engine.open(dir.resolve(file).toString(), EngineConfig(user, "$user's phone", Durability.FULL))

fun newPlan(engine: Engine): String =
    engine.createPlan(NewPlan(mentee = "ana", coaches = listOf("carla"), program = "First-year success", term = "Spring 2025"))

/** Collects document changes with the thread each arrived on. */
class Recorder : DocumentObserver {
    val changes = LinkedBlockingQueue<Pair<DocumentChange, Thread>>()
    override fun documentChanged(change: DocumentChange) {
        changes.put(change to Thread.currentThread())
    }
    fun next(): Pair<DocumentChange, Thread> =
        changes.poll(5, TimeUnit.SECONDS) ?: throw AssertionError("no document change within 5 s")
}

fun logASessionOffline(dir: Path) {
    val start = Instant.parse("2025-03-03T15:00:00Z")
    var engine = openEngine(dir, "carla")
    val plan = newPlan(engine)
    val session = engine.logSession(
        NewSession(
            plan = plan, coach = "carla", mentee = "ana", start = start, durationMinutes = 45u,
            mode = SessionMode.IN_PERSON, topics = listOf("time management"), notes = "Exam schedule.",
            mood = 4u.toUByte(), actionItems = listOf(NewActionItem("Book tutoring", "ana", "2025-03-07")),
            followUp = "2025-03-10",
        )
    )
    val log = engine.session(session)
    expectEqual(start, log.start, "session start")
    expectEqual(SessionMode.IN_PERSON, log.mode, "session mode")
    expectEqual("2025-03-10", log.followUp, "follow-up")
    expectEqual(listOf("Book tutoring"), log.actionItems.map { it.text }, "action items")
    engine.close()
    engine = openEngine(dir, "carla")
    expectEqual("Exam schedule.", engine.session(session).notes, "notes after reopening")
    engine.close()
}

fun editAGoalAndObserveIt(dir: Path) {
    openEngine(dir, "ana").use { engine ->
        val recorder = Recorder()
        engine.setDocumentObserver(recorder)
        val plan = newPlan(engine)
        val (created, _) = recorder.next()
        expectEqual(plan, created.document, "created document")
        expectEqual(DocKind.PLAN, created.kind, "created kind")
        val goal = engine.addGoal(plan, NewGoal(title = "Pass Calculus I", category = "academic"))
        recorder.next()
        engine.editGoal(plan, goal, GoalEdit(title = "Pass Calculus I with a B"))
        val (edited, thread) = recorder.next()
        expectEqual(ChangeOrigin.LOCAL, edited.origin, "origin")
        expectEqual("ana", edited.changes.last().author, "author")
        check(thread != Thread.currentThread()) { "the observer ran on the calling thread" }
        engine.updateProgress(plan, goal, 40u.toUByte())
        val read = engine.plan(plan).goals.single()
        expectEqual("Pass Calculus I with a B", read.title, "goal title")
        expectEqual(40, read.progress.toInt(), "goal progress")
        engine.setDocumentObserver(null)
    }
}

fun projectionQueries(dir: Path) {
    openEngine(dir, "carla", "queries.db").use { engine ->
        val plan = newPlan(engine)
        val goal = engine.addGoal(plan, NewGoal(title = "Pass Calculus I"))
        engine.addMilestone(plan, goal, NewMilestone("Problem set 3", "2025-03-05"))
        engine.addMilestone(plan, goal, NewMilestone("Midterm", "2025-03-20"))
        val session = engine.logSession(
            NewSession(
                plan = plan, coach = "carla", mentee = "ana", start = Instant.parse("2025-03-04T10:00:00Z"),
                durationMinutes = 30u, mode = SessionMode.VIDEO,
                actionItems = listOf(NewActionItem(text = "Email the professor", owner = "ana")),
            )
        )
        val thisWeek = engine.milestonesDue(MilestonesDueQuery(since = "2025-03-03", until = "2025-03-10"))
        expectEqual(listOf("Problem set 3"), thisWeek.map { it.title }, "milestones due this week")
        val open = engine.openActionItemsOfMentee("ana")
        expectEqual(listOf("Email the professor"), open.map { it.text }, "open action items")
        engine.tickActionItem(session, open.single().id, true)
        expectEqual(0, engine.openActionItemsOfMentee("ana").size, "open action items after ticking")
        val march = engine.sessionsBetween(
            SessionsBetweenQuery(since = Instant.parse("2025-03-01T00:00:00Z"), until = Instant.parse("2025-04-01T00:00:00Z"))
        )
        expectEqual(listOf(session), march.map { it.id }, "sessions in March")
    }
}

fun errors(dir: Path) {
    openEngine(dir, "carla", "errors.db").use { engine ->
        val plan = newPlan(engine)
        expectThrows<ApiException.InvalidInput>("malformed id") { engine.plan("not a document id") }
        expectThrows<ApiException.InvalidInput>("malformed date") {
            engine.addGoal(plan, NewGoal(title = "x", targetDate = "next tuesday"))
        }
        val goal = engine.addGoal(plan, NewGoal(title = "Pass Calculus I"))
        expectThrows<ApiException.InvalidInput>("progress above 100") { engine.updateProgress(plan, goal, 101u.toUByte()) }
        expectThrows<ApiException.NotFound>("unknown goal") { engine.updateProgress(plan, "no-such-goal", 10u.toUByte()) }
    }
    expectThrows<ApiException.InvalidInput>("another user's database") { openEngine(dir, "mallory", "errors.db") }
}

fun conflictBetweenTwoDevices(dir: Path) {
    val coach = openEngine(dir, "carla", "coach.db")
    val mentee = openEngine(dir, "ana", "mentee.db")
    val plan = newPlan(coach)
    val goal = coach.addGoal(plan, NewGoal(title = "Pass Calculus I"))
    mentee.applyChanges(plan, coach.exportDocument(plan))
    coach.setGoalTargetDate(plan, goal, "2025-05-01")
    mentee.setGoalTargetDate(plan, goal, "2025-06-01")
    val recorder = Recorder()
    coach.setDocumentObserver(recorder)
    coach.applyChanges(plan, mentee.exportDocument(plan))
    mentee.applyChanges(plan, coach.exportDocument(plan))
    expectEqual(ChangeOrigin.REMOTE, recorder.next().first.origin, "merge origin")
    for (engine in listOf(coach, mentee)) {
        val conflict = engine.conflicts(plan).single()
        expectEqual("targetDate", conflict.path.last(), "conflict path")
        expectEqual(listOf("2025-05-01", "2025-06-01"), conflict.values.map { it.value }.sorted(), "conflict values")
        expectEqual(listOf("ana", "carla"), conflict.values.map { it.author }.sortedBy { it }, "conflict authors")
    }
    expectEqual(coach.plan(plan), mentee.plan(plan), "both devices read the same plan")
    coach.close()
    mentee.close()
}

/** A `tandem-server serve` process on loopback (tokens required), with coach carla paired with
 *  mentee ana by `tandem-server admin`. Killed by [stop]. */
class Relay(val data: Path) : AutoCloseable {
    private val server = System.getenv("TANDEM_SERVER") ?: "target/debug/tandem-server"
    private var process: Process? = null
    lateinit var url: String

    fun admin(vararg args: String): String {
        val admin = ProcessBuilder(server, "admin", "--data", data.toString(), *args)
            .redirectError(ProcessBuilder.Redirect.INHERIT).start()
        val out = admin.inputStream.bufferedReader().readText().trim()
        check(admin.waitFor() == 0) { "admin ${args.toList()} failed" }
        return out
    }

    fun start(): Relay {
        val program = "First-year success"
        admin("program", "add", program)
        admin("user", "add", "carla", "--role", "coach", "--program", program)
        admin("user", "add", "ana", "--role", "mentee", "--program", program)
        admin("pairing", "add", "--coach", "carla", "--mentee", "ana")
        val started = ProcessBuilder(server, "serve", "--listen", "127.0.0.1:0", "--data", data.toString())
            .redirectError(data.resolve("relay.log").toFile()).start()
        process = started
        val line = started.inputStream.bufferedReader().readLine() ?: ""
        check(line.startsWith("tandem-server listening on ")) { "relay said '$line'" }
        url = "ws://${line.split(" ").last()}/sync"
        return this
    }

    /** A device token, shown once; the device's actors are bound to it on first use. */
    fun token(user: String): String = admin("token", "issue", "--user", user, "--name", "$user's test phone")

    override fun close() {
        process?.destroyForcibly()?.waitFor(10, TimeUnit.SECONDS)
    }
}

class SyncRecorder : SyncObserver {
    val statuses = LinkedBlockingQueue<SyncStatus>()
    val saved = LinkedBlockingQueue<Pair<String, List<String>>>()
    val remote = LinkedBlockingQueue<RemoteChange>()
    override fun syncStatusChanged(status: SyncStatus) = statuses.put(status)
    override fun savedToServer(document: String, changes: List<String>) = saved.put(document to changes)
    override fun remoteChange(change: RemoteChange) = remote.put(change)

    /** Waits for a remote change of [document] touching a path ending in [pathEnd]. */
    fun remoteChangeTo(document: String, pathEnd: String): RemoteChange {
        while (true) {
            val change = remote.poll(30, TimeUnit.SECONDS) ?: throw AssertionError("no remote change within 30 s")
            if (change.document == document && change.paths.any { it.endsWith(pathEnd) }) return change
        }
    }
}

fun syncThroughARealRelay(dir: Path) = Relay(dir.resolve("relay").also { Files.createDirectories(it) }).use { relay ->
    relay.start()
    fun openSynced(user: String) = Engine.open(
        dir.resolve("$user-synced.db").toString(),
        EngineConfig(user, "$user's phone", Durability.FULL, relayUrl = relay.url, token = relay.token(user)),
    )
    val coach = openSynced("carla")
    val mentee = openSynced("ana")
    val coachSync = SyncRecorder()
    val menteeSync = SyncRecorder()
    coach.setSyncObserver(coachSync)
    mentee.setSyncObserver(menteeSync)
    runBlocking {
        expectThrows<ApiException.Offline>("syncNow before startSync") { runBlocking { coach.syncNow(1_000u) } }

        // The coach uploads the plan; the mentee follows it and receives it.
        val plan = newPlan(coach)
        val goal = coach.addGoal(plan, NewGoal(title = "Pass Calculus I"))
        coach.startSync()
        coach.syncNow(30_000u)
        val (savedDocument, savedChanges) = coachSync.saved.poll(30, TimeUnit.SECONDS)
            ?: throw AssertionError("no saved-to-server callback")
        expectEqual(plan, savedDocument, "saved document")
        check(savedChanges.isNotEmpty()) { "saved changes listed" }
        mentee.follow(plan)
        mentee.startSync()
        mentee.syncNow(30_000u)
        expectEqual("Pass Calculus I", mentee.plan(plan).goals.single().title, "the followed plan arrived")
        coach.stopSync()
        mentee.stopSync()

        // Apart, both set the goal's target date; then both sync, twice.
        coach.setGoalTargetDate(plan, goal, "2025-05-01")
        mentee.setGoalTargetDate(plan, goal, "2025-06-01")
        val menteeEdit = mentee.history(plan).last().hash
        expectEqual(false, mentee.isSavedToServer(menteeEdit), "saved before sync")
        coach.startSync()
        mentee.startSync()
        for (engine in listOf(coach, mentee, coach, mentee)) engine.syncNow(30_000u)
        coachSync.remoteChangeTo(plan, "targetDate")
        menteeSync.remoteChangeTo(plan, "targetDate")

        expectEqual(true, mentee.isSavedToServer(menteeEdit), "saved after sync")
        for (engine in listOf(coach, mentee)) {
            val status = engine.syncStatus()
            expectEqual(ConnectionState.CONNECTED, status.connection, "connection")
            expectEqual(0uL, status.pendingChanges, "pending changes")
            val conflict = engine.conflicts(plan).single()
            expectEqual("targetDate", conflict.path.last(), "conflict path")
            expectEqual(listOf("2025-05-01", "2025-06-01"), conflict.values.map { it.value }.sorted(), "conflict values")
            expectEqual(listOf("ana", "carla"), conflict.values.map { it.author }.sortedBy { it }, "conflict authors")
        }
        expectEqual(coach.plan(plan), mentee.plan(plan), "both devices read the same plan")
        check(coachSync.statuses.any { it.connection == ConnectionState.CONNECTED }) { "a Connected status callback" }
    }
    coach.stopSync()
    mentee.stopSync()
    coach.close()
    mentee.close()
}

fun main() {
    val tests = listOf(
        "log a session offline" to ::logASessionOffline,
        "edit a goal and observe it" to ::editAGoalAndObserveIt,
        "projection queries" to ::projectionQueries,
        "errors an app can act on" to ::errors,
        "a conflict between two devices" to ::conflictBetweenTwoDevices,
        "sync through a real relay" to ::syncThroughARealRelay,
    )
    var failed = 0
    for ((name, test) in tests) {
        val dir = Files.createTempDirectory("tandem-kotlin-")
        try {
            test(dir)
            println("ok    $name")
        } catch (e: Throwable) {
            failed += 1
            println("FAIL  $name: $e")
            e.printStackTrace()
        } finally {
            dir.toFile().deleteRecursively()
        }
    }
    println("${tests.size - failed} passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
