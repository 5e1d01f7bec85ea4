//! The device composition against an in-process relay engine: no sockets, no threads, no clock.

use std::collections::BTreeMap;

use super::{ConnectionState, Device, SyncEvent};
use crate::ids::{DirectoryId, DocumentId, PlanId, UserId};
use crate::model::{DirectoryEntry, DocKind, NewDirectory, NewGoal, NewPlan};
use crate::repo::{Repo, RepoConfig};
use crate::sync::{
    ConnectionId, Direction, Effect, EngineConfig, PersistTicket, Role, StorageId, StoredDocument,
    SyncEngine,
};

/// A relay engine with a map for a disk, whose commits a test can hold back.
struct Relay {
    engine: SyncEngine,
    disk: BTreeMap<DocumentId, Vec<u8>>,
    states: BTreeMap<(DocumentId, StorageId), Vec<u8>>,
    hold_persists: bool,
    held: Vec<(PersistTicket, DocumentId, Vec<u8>)>,
}

/// A relay and devices, linked by connections that deliver frames in order.
struct World {
    relay: Relay,
    devices: Vec<Device>,
    /// (device, its connection id, the relay's connection id)
    links: Vec<(usize, ConnectionId, ConnectionId)>,
    events: Vec<Vec<SyncEvent>>,
}

impl World {
    fn new() -> Self {
        let config = EngineConfig::new("relay", Role::Relay).with_storage_id("relay-storage");
        Self {
            relay: Relay {
                engine: SyncEngine::new(config),
                disk: BTreeMap::new(),
                states: BTreeMap::new(),
                hold_persists: false,
                held: Vec::new(),
            },
            devices: Vec::new(),
            links: Vec::new(),
            events: Vec::new(),
        }
    }

    fn add_device(&mut self, user: &str) -> usize {
        let repo = Repo::open_in_memory(RepoConfig::new(UserId::from(user), user)).unwrap();
        self.devices.push(Device::new(repo).unwrap());
        self.events.push(Vec::new());
        self.devices.len() - 1
    }

    fn connect(&mut self, device: usize) {
        let on_relay = self.relay.engine.connection_opened(Direction::Incoming);
        let on_device = self.devices[device].connection_opened();
        self.links.push((device, on_device, on_relay));
        self.run_until_quiet();
    }

    fn disconnect(&mut self, device: usize) {
        let links: Vec<_> = self
            .links
            .iter()
            .filter(|l| l.0 == device)
            .copied()
            .collect();
        self.links.retain(|l| l.0 != device);
        for (_, on_device, on_relay) in links {
            self.devices[device].connection_closed(on_device);
            self.relay.engine.connection_closed(on_relay);
        }
        self.run_until_quiet();
    }

    fn run_until_quiet(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for device in 0..self.devices.len() {
                let events = self.devices[device].take_events();
                self.events[device].extend(events);
                for out in self.devices[device].take_outgoing() {
                    moved = true;
                    match out {
                        super::Outgoing::Frame { connection, frame } => {
                            if let Some(&(_, _, on_relay)) = self
                                .links
                                .iter()
                                .find(|l| l.0 == device && l.1 == connection)
                            {
                                self.relay.engine.frame_received(on_relay, &frame);
                            }
                        }
                        super::Outgoing::Close { connection, .. } => {
                            if let Some(&(_, _, on_relay)) = self
                                .links
                                .iter()
                                .find(|l| l.0 == device && l.1 == connection)
                            {
                                self.relay.engine.connection_closed(on_relay);
                            }
                        }
                    }
                }
            }
            for effect in self.relay.engine.take_effects() {
                moved = true;
                self.relay_effect(effect);
            }
            if !moved {
                for device in 0..self.devices.len() {
                    let events = self.devices[device].take_events();
                    self.events[device].extend(events);
                }
                return;
            }
        }
        panic!("the world never went quiet");
    }

    fn relay_effect(&mut self, effect: Effect) {
        let relay = &mut self.relay;
        match effect {
            Effect::Send { connection, frame } => {
                if let Some(&(device, on_device, _)) = self.links.iter().find(|l| l.2 == connection)
                {
                    self.devices[device].frame_received(on_device, &frame);
                }
            }
            Effect::Close { connection, .. } => {
                if let Some(&(device, on_device, _)) = self.links.iter().find(|l| l.2 == connection)
                {
                    self.devices[device].connection_closed(on_device);
                }
            }
            Effect::LoadDocument { document } => {
                let stored = StoredDocument {
                    bytes: relay.disk.get(&document).cloned(),
                    sync_states: relay
                        .states
                        .iter()
                        .filter(|((d, _), _)| *d == document)
                        .map(|((_, s), state)| (s.clone(), state.clone()))
                        .collect(),
                };
                relay.engine.document_loaded(document, stored).unwrap();
            }
            Effect::Persist {
                ticket,
                document,
                changes,
            } => {
                if relay.hold_persists {
                    relay.held.push((ticket, document, changes));
                } else {
                    relay.disk.entry(document).or_default().extend(changes);
                    relay.engine.persisted(ticket);
                }
            }
            Effect::SaveSyncState {
                document,
                storage_id,
                state,
            } => {
                relay.states.insert((document, storage_id), state);
            }
            _ => {}
        }
    }

    fn release_persists(&mut self) {
        let relay = &mut self.relay;
        for (ticket, document, changes) in std::mem::take(&mut relay.held) {
            relay.disk.entry(document).or_default().extend(changes);
            relay.engine.persisted(ticket);
        }
        self.run_until_quiet();
    }

    fn saved_events(&self, device: usize) -> usize {
        self.events[device]
            .iter()
            .filter(|e| matches!(e, SyncEvent::Saved { .. }))
            .map(|e| match e {
                SyncEvent::Saved { changes, .. } => changes.len(),
                _ => 0,
            })
            .sum()
    }
}

fn new_plan() -> NewPlan {
    NewPlan {
        mentee: UserId::from("ana"),
        coaches: vec![UserId::from("carla")],
        program: "First-year success".into(),
        term: "Spring 2026".into(),
        strengths: vec![],
        challenges: vec![],
        learning_style: String::new(),
    }
}

fn new_goal(title: &str) -> NewGoal {
    NewGoal {
        title: title.into(),
        description: String::new(),
        category: "academic".into(),
        target_date: None,
    }
}

/// A plan and a directory listing it, made on `device`.
fn plan_in_directory(world: &mut World, device: usize) -> (PlanId, DirectoryId) {
    world.devices[device]
        .with_repo(|repo| {
            let plan = repo.create_plan(new_plan())?;
            let directory = repo.create_directory(NewDirectory {
                program: "First-year success".into(),
                coach: UserId::from("carla"),
                mentee: UserId::from("ana"),
            })?;
            repo.add_directory_entry(
                directory,
                DirectoryEntry {
                    document: plan.0,
                    kind: DocKind::Plan,
                    title: "Ana's plan".into(),
                },
            )?;
            Ok((plan, directory))
        })
        .unwrap()
}

#[test]
fn offline_edits_are_sent_on_connect_and_saved_only_once_the_relay_committed_them() {
    let mut world = World::new();
    let a = world.add_device("carla");
    let (plan, goal) = world.devices[a]
        .with_repo(|repo| {
            let plan = repo.create_plan(new_plan())?;
            let goal = repo.add_goal(plan, new_goal("Pass calculus"))?;
            Ok((plan, goal))
        })
        .unwrap();
    let status = world.devices[a].status();
    assert_eq!(status.connection, ConnectionState::Offline);
    assert_eq!((status.pending_documents, status.pending_changes), (1, 2));
    let unsaved = world.devices[a].unsaved_changes(plan.0).unwrap();
    assert_eq!(unsaved.len(), 2);

    world.relay.hold_persists = true;
    world.connect(a);
    assert!(
        !world.relay.held.is_empty(),
        "the offline edits reached the relay"
    );
    let status = world.devices[a].status();
    assert_eq!(status.connection, ConnectionState::Connected);
    assert_eq!(
        status.pending_changes, 2,
        "not saved before the relay commits"
    );
    assert!(!status.in_sync);
    for change in &unsaved {
        assert_eq!(
            world.devices[a].is_saved_to_server(change).unwrap(),
            Some(false)
        );
    }
    assert_eq!(world.saved_events(a), 0);

    world.release_persists();
    for change in &unsaved {
        assert_eq!(
            world.devices[a].is_saved_to_server(change).unwrap(),
            Some(true)
        );
    }
    assert_eq!(world.saved_events(a), 2);
    let status = world.devices[a].status();
    assert!(status.in_sync && status.is_complete(), "{status:?}");
    assert_eq!(status.pending_changes, 0);
    assert!(status.last_synced_at.is_some());
    assert!(world.relay.disk.contains_key(&plan.0));

    // An edit while connected: unsaved until the relay's answer covers it.
    world.relay.hold_persists = true;
    world.devices[a]
        .with_repo(|repo| repo.update_progress(plan, &goal, 50))
        .unwrap();
    world.run_until_quiet();
    assert_eq!(world.devices[a].status().pending_changes, 1);
    world.release_persists();
    assert_eq!(world.devices[a].status().pending_changes, 0);
    assert_eq!(world.saved_events(a), 3);
}

#[test]
fn a_followed_directory_brings_its_documents_with_their_projection() {
    let mut world = World::new();
    let a = world.add_device("carla");
    let b = world.add_device("ana");
    let (plan, directory) = plan_in_directory(&mut world, a);
    world.connect(a);
    assert!(world.devices[a].status().is_complete());

    world.devices[b].follow(directory.0).unwrap();
    world.connect(b);
    let status = world.devices[b].status();
    assert!(status.is_complete(), "{status:?}");
    let plans = world.devices[b]
        .repo()
        .plans_of_mentee(&UserId::from("ana"))
        .unwrap();
    assert_eq!(plans.len(), 1, "the plan arrived through the directory");
    assert_eq!(plans[0].id, plan);

    // A document added to the directory later follows too.
    let session_plan = world.devices[a]
        .with_repo(|repo| {
            let second = repo.create_plan(new_plan())?;
            repo.add_directory_entry(
                directory,
                DirectoryEntry {
                    document: second.0,
                    kind: DocKind::Plan,
                    title: "Second plan".into(),
                },
            )?;
            Ok(second)
        })
        .unwrap();
    world.run_until_quiet();
    let plans = world.devices[b]
        .repo()
        .plans_of_mentee(&UserId::from("ana"))
        .unwrap();
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert!(plans.iter().any(|p| p.id == session_plan));
    assert!(world.devices[b].status().is_complete());
}

#[test]
fn remote_changes_update_the_projection_and_name_the_changed_paths() {
    let mut world = World::new();
    let a = world.add_device("carla");
    let b = world.add_device("ana");
    let (plan, directory) = plan_in_directory(&mut world, a);
    let goal = world.devices[a]
        .with_repo(|repo| repo.add_goal(plan, new_goal("Pass calculus")))
        .unwrap();
    world.connect(a);
    world.devices[b].follow(directory.0).unwrap();
    world.connect(b);
    world.events[b].clear();

    world.devices[a]
        .with_repo(|repo| repo.update_progress(plan, &goal, 70))
        .unwrap();
    world.run_until_quiet();

    let goals = world.devices[b].repo().store().goals_of_plan(plan).unwrap();
    assert_eq!(goals[0].progress, 70, "the projection is refreshed");
    let changes: Vec<_> = world.events[b]
        .iter()
        .filter_map(|e| match e {
            SyncEvent::RemoteChange(change) => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1, "{:?}", world.events[b]);
    assert_eq!(changes[0].document, plan.0);
    assert_eq!(changes[0].kind, Some(DocKind::Plan));
    assert_eq!(changes[0].top_level_keys, vec!["goals".to_owned()]);
    assert_eq!(
        changes[0].paths,
        vec![format!("goals/{}/progress", goal.as_str())]
    );
}

#[test]
fn edits_made_while_disconnected_are_sent_on_reconnect_and_sync_state_is_kept() {
    let mut world = World::new();
    let a = world.add_device("carla");
    let b = world.add_device("ana");
    let (plan, directory) = plan_in_directory(&mut world, a);
    world.connect(a);
    world.devices[b].follow(directory.0).unwrap();
    world.connect(b);

    world.disconnect(a);
    assert_eq!(
        world.devices[a].status().connection,
        ConnectionState::Offline
    );
    world.devices[a]
        .with_repo(|repo| repo.set_term(plan, "Fall 2026"))
        .unwrap();
    assert_eq!(world.devices[a].status().pending_changes, 1);
    world.run_until_quiet();
    assert_eq!(
        world.devices[b].with_repo(|r| r.plan(plan)).unwrap().term,
        "Spring 2026"
    );

    world.connect(a);
    assert_eq!(world.devices[a].status().pending_changes, 0);
    assert_eq!(
        world.devices[b].with_repo(|r| r.plan(plan)).unwrap().term,
        "Fall 2026"
    );
    let kept = world.devices[a]
        .repo()
        .store()
        .sync_state(plan.0, "relay-storage")
        .unwrap();
    assert!(
        kept.is_some(),
        "the sync state with the relay is saved on the device"
    );
}

#[test]
fn a_device_reopened_on_its_store_offers_unsaved_changes_and_follows_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let config = RepoConfig::new(UserId::from("carla"), "phone");
    let plan = {
        let mut device = Device::new(Repo::open(&path, config.clone()).unwrap()).unwrap();
        device.follow(DocumentId::random()).unwrap();
        device
            .with_repo(|repo| repo.create_plan(new_plan()))
            .unwrap()
    };
    let mut world = World::new();
    world
        .devices
        .push(Device::new(Repo::open(&path, config).unwrap()).unwrap());
    world.events.push(Vec::new());
    assert_eq!(world.devices[0].followed().count(), 1);
    assert_eq!(world.devices[0].status().pending_changes, 1);
    world.connect(0);
    assert!(world.relay.disk.contains_key(&plan.0));
    assert_eq!(world.devices[0].status().pending_changes, 0);
    // The followed document nobody has does not keep the device from being in sync.
    assert!(world.devices[0].status().is_complete());
}

#[test]
fn changes_that_are_not_a_tandem_document_are_refused_and_reported() {
    use automerge::transaction::Transactable;
    let mut world = World::new();
    let a = world.add_device("carla");
    // A foreign peer wrote a document without a Tandem `type` to the relay.
    let foreign = DocumentId::random();
    let mut doc = automerge::Automerge::new();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(automerge::ROOT, "hello", "world")?;
        Ok(())
    })
    .unwrap();
    world.relay.disk.insert(foreign, doc.save());
    world.devices[a].follow(foreign).unwrap();
    world.connect(a);
    assert!(
        world.events[a]
            .iter()
            .any(|e| matches!(e, SyncEvent::Failed { document, .. } if *document == foreign)),
        "{:?}",
        world.events[a]
    );
    assert!(
        !world.devices[a]
            .repo()
            .store()
            .document_exists(foreign)
            .unwrap()
    );
    assert!(world.devices[a].status().is_complete());
}

#[test]
fn edits_made_while_messages_are_in_flight_are_all_saved() {
    use std::collections::VecDeque;
    let mut world = World::new();
    let a = world.add_device("carla");
    let (plan, _directory) = plan_in_directory(&mut world, a);
    let goal = world.devices[a]
        .with_repo(|repo| repo.add_goal(plan, new_goal("Pass calculus")))
        .unwrap();
    world.connect(a);
    let (_, on_device, on_relay) = world.links[0];
    // Frames in flight, in order: (towards the relay?, frame).
    let mut wire: VecDeque<(bool, Vec<u8>)> = VecDeque::new();
    let collect = |world: &mut World, wire: &mut VecDeque<(bool, Vec<u8>)>| {
        for out in world.devices[a].take_outgoing() {
            if let super::Outgoing::Frame { frame, .. } = out {
                wire.push_back((true, frame));
            }
        }
        for effect in world.relay.engine.take_effects() {
            match effect {
                Effect::Send { frame, .. } => wire.push_back((false, frame)),
                other => world.relay_effect(other),
            }
        }
    };
    let deliver = |world: &mut World, (to_relay, frame): (bool, Vec<u8>)| {
        if to_relay {
            world.relay.engine.frame_received(on_relay, &frame);
        } else {
            world.devices[a].frame_received(on_device, &frame);
        }
    };
    // Edits land while messages fly and while the relay's commits lag behind: one frame is
    // delivered every third edit, and the relay's commits are confirmed every fourth.
    world.relay.hold_persists = true;
    let confirm = |world: &mut World| {
        let relay = &mut world.relay;
        for (ticket, document, changes) in std::mem::take(&mut relay.held) {
            relay.disk.entry(document).or_default().extend(changes);
            relay.engine.persisted(ticket);
        }
    };
    for n in 0..120u8 {
        if n % 4 == 0 {
            confirm(&mut world);
            collect(&mut world, &mut wire);
        }
        world.devices[a]
            .with_repo(|repo| repo.update_progress(plan, &goal, n % 101))
            .unwrap();
        collect(&mut world, &mut wire);
        if n % 3 == 0
            && let Some(next) = wire.pop_front()
        {
            deliver(&mut world, next);
            collect(&mut world, &mut wire);
        }
    }
    let mut delivered = 0;
    confirm(&mut world);
    collect(&mut world, &mut wire);
    while let Some(next) = wire.pop_front() {
        deliver(&mut world, next);
        collect(&mut world, &mut wire);
        confirm(&mut world);
        collect(&mut world, &mut wire);
        delivered += 1;
        assert!(delivered < 10_000, "the exchange never ends");
    }
    world.relay.hold_persists = false;
    world.run_until_quiet();
    let status = world.devices[a].status();
    assert_eq!(status.pending_changes, 0, "{status:?}");
    assert!(status.is_complete());
}

/// A world whose relay answers the snapshot fetch.
fn fetch_world() -> World {
    let mut world = World::new();
    world.relay.engine = SyncEngine::new(
        EngineConfig::new("relay", Role::Relay)
            .with_storage_id("relay-storage")
            .with_snapshot_fetch(true),
    );
    world
}

#[test]
fn fetched_snapshots_are_stored_together_with_their_projection_and_named_whole() {
    let mut world = fetch_world();
    let a = world.add_device("carla");
    let b = world.add_device("ana");
    let (plan, directory) = plan_in_directory(&mut world, a);
    let more: Vec<PlanId> = world.devices[a]
        .with_repo(|repo| {
            let mut plans = Vec::new();
            for i in 0..5 {
                let plan = repo.create_plan(new_plan())?;
                repo.add_goal(plan, new_goal(&format!("goal {i}")))?;
                repo.add_directory_entry(
                    directory,
                    DirectoryEntry {
                        document: plan.0,
                        kind: DocKind::Plan,
                        title: format!("plan {i}"),
                    },
                )?;
                plans.push(plan);
            }
            Ok(plans)
        })
        .unwrap();
    world.connect(a);
    assert!(world.devices[a].status().is_complete());

    world.devices[b].follow(directory.0).unwrap();
    world.connect(b);
    let status = world.devices[b].status();
    assert!(status.is_complete(), "{status:?}");
    // The directory came first, then its six plans in one `want`, as snapshots.
    assert!(
        status.fetch.is_complete() && status.fetch.documents_total == 7,
        "{status:?}"
    );
    let plans = world.devices[b]
        .repo()
        .plans_of_mentee(&UserId::from("ana"))
        .unwrap();
    assert_eq!(plans.len(), 6, "every plan with its projection");
    for id in more.iter().chain([&plan]) {
        // The app hears each document changed under every root key, as for a loaded one.
        let change = world.events[b]
            .iter()
            .find_map(|e| match e {
                SyncEvent::RemoteChange(change) if change.document == id.0 => Some(change),
                _ => None,
            })
            .unwrap();
        assert_eq!(change.kind, Some(DocKind::Plan));
        assert!(
            change.top_level_keys.contains(&"goals".to_owned()),
            "{change:?}"
        );
        assert!(change.paths.contains(&"goals".to_owned()), "{change:?}");
        let stored = world.devices[b].repo().store().load_chunks(id.0).unwrap();
        assert_eq!(stored.len(), 1, "stored as the one snapshot it came as");
    }
    // The engine has not loaded them; an edit loads one, and it syncs as usual.
    assert!(world.devices[b].engine().document(&more[0].0).is_none());
    world.devices[b]
        .with_repo(|repo| repo.add_goal(more[0], new_goal("from ana")).map(|_| ()))
        .unwrap();
    world.run_until_quiet();
    assert!(world.devices[b].engine().document(&more[0].0).is_some());
    assert!(world.devices[b].status().is_complete());
    let goals = world.devices[a]
        .with_repo(|repo| repo.plan(more[0]))
        .unwrap()
        .goals;
    assert!(goals.iter().any(|g| g.title == "from ana"), "{goals:?}");
}

#[test]
fn a_snapshot_whose_content_does_not_load_is_refused_and_stores_nothing() {
    use crate::sync::fetch::push_snapshot;
    use crate::sync::{FetchStep, Message};
    use sha2::{Digest, Sha256};

    // Two plans made elsewhere, each saved as one document chunk.
    let mut origin = Repo::open_in_memory(RepoConfig::new(UserId::from("carla"), "c")).unwrap();
    let mut saved = Vec::new();
    for _ in 0..2 {
        let plan = origin.create_plan(new_plan()).unwrap();
        let bytes: Vec<u8> = origin
            .store()
            .load_chunks(plan.0)
            .unwrap()
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect();
        saved.push((plan, automerge::Automerge::load(&bytes).unwrap().save()));
    }
    let (good, good_bytes) = saved[0].clone();
    let (bad, mut bad_bytes) = saved[1].clone();
    // One byte of its content changed, and the chunk's checksum made to match again: the header
    // reads as a whole document, the history does not hash to its heads.
    let at = bad_bytes
        .windows(3)
        .position(|w| w == b"ana")
        .expect("the mentee is in the snapshot");
    bad_bytes[at + 2] = b'b';
    let checksum = Sha256::digest(&bad_bytes[8..]);
    bad_bytes[4..8].copy_from_slice(&checksum[..4]);
    assert!(automerge::Automerge::load(&bad_bytes).is_err());
    assert!(crate::sync::fetch::snapshot_heads(&bad_bytes).is_some());

    // A fresh device following both; its `want` lists them together.
    let mut repo = Repo::open_in_memory(RepoConfig::new(UserId::from("ana"), "a")).unwrap();
    repo.store_mut().follow(good.0).unwrap();
    repo.store_mut().follow(bad.0).unwrap();
    let mut device = Device::new(repo).unwrap();
    let mut relay = SyncEngine::new(
        EngineConfig::new("relay", Role::Relay)
            .with_storage_id("relay-storage")
            .with_snapshot_fetch(true),
    );
    let on_relay = relay.connection_opened(Direction::Incoming);
    let connection = device.connection_opened();
    for out in device.take_outgoing() {
        if let super::Outgoing::Frame { frame, .. } = out {
            relay.frame_received(on_relay, &frame);
        }
    }
    for effect in relay.take_effects() {
        if let Effect::Send { frame, .. } = effect {
            device.frame_received(connection, &frame);
        }
    }
    let frame = |step| {
        Message::Fetch {
            sender_id: "relay".into(),
            target_id: "device".into(),
            step,
        }
        .encode()
    };
    let mut batch = Vec::new();
    push_snapshot(&mut batch, &good.0, &good_bytes);
    push_snapshot(&mut batch, &bad.0, &bad_bytes);
    device.frame_received(
        connection,
        &frame(FetchStep::Manifest {
            count: 2,
            bytes: (good_bytes.len() + bad_bytes.len()) as u64,
        }),
    );
    device.frame_received(connection, &frame(FetchStep::Snapshots(batch)));
    let events = device.take_events();
    assert!(
        events.iter().any(
            |e| matches!(e, SyncEvent::Failed { document, reason } if *document == bad.0 && reason.contains("cannot use"))
        ),
        "{events:?}"
    );
    let store = device.repo().store();
    assert!(
        !store.document_exists(bad.0).unwrap(),
        "nothing of it stored"
    );
    assert!(store.document_exists(good.0).unwrap(), "the other one is");
    assert_eq!(
        device
            .repo()
            .plans_of_mentee(&UserId::from("ana"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(device.status().fetch.documents_done, 1);
}
