#include "state/election.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>

#include "common/dtype.h"

namespace eccl::state {
namespace {

// What is compared between members: the non-divergent entries, by name.
using Content = std::vector<wire::SyncEntry>;

Content contentOf(const Manifest& m) {
  Content c;
  for (const wire::SyncEntry& e : m.entries) {
    if (!e.allowDivergence) c.push_back(e);
  }
  std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return c;
}

bool lessContent(const Content& a, const Content& b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return std::tie(x.name, x.dtype, x.count, x.hash) < std::tie(y.name, y.dtype, y.count, y.hash);
  });
}

Status mismatch(std::string message) { return error(ecclStateMismatch, std::move(message)); }

// Problems a manifest has on its own: duplicate names.
Status checkManifest(const Manifest& m) {
  std::set<std::string> names;
  for (const wire::SyncEntry& e : m.entries) {
    if (!names.insert(e.name).second) {
      return error(ecclInvalidArgument,
                   fmt::format("peer {} has two tensors named \"{}\"", m.peerId, e.name));
    }
  }
  return Status::ok();
}

// How `mine` differs in shape from the elected content: the first tensor
// missing, extra, or of another dtype or count; ok when only hashes differ.
Status compareShape(uint64_t peer, const Content& mine, const Content& elected) {
  size_t i = 0, j = 0;
  while (i < mine.size() || j < elected.size()) {
    if (j == elected.size() || (i < mine.size() && mine[i].name < elected[j].name)) {
      return mismatch(fmt::format("peer {} has tensor \"{}\", which the elected state has not "
                                  "(or has as allow-divergence)", peer, mine[i].name));
    }
    if (i == mine.size() || elected[j].name < mine[i].name) {
      return mismatch(fmt::format("peer {} lacks tensor \"{}\" of the elected state (or marks it "
                                  "allow-divergence)", peer, elected[j].name));
    }
    const wire::SyncEntry& a = mine[i];
    const wire::SyncEntry& b = elected[j];
    if (a.dtype != b.dtype || a.count != b.count) {
      return mismatch(fmt::format("peer {} holds tensor \"{}\" as {} x {}, the elected state as "
                                  "{} x {}", peer, a.name, a.count,
                                  dtypeName(static_cast<ecclDataType_t>(a.dtype)), b.count,
                                  dtypeName(static_cast<ecclDataType_t>(b.dtype))));
    }
    ++i;
    ++j;
  }
  return Status::ok();
}

}  // namespace

Election elect(const std::vector<Manifest>& members, size_t maxSources) {
  Election out;
  // 1. Each member on its own: names unique, revision one past its last sync.
  std::vector<const Manifest*> ok;
  for (const Manifest& m : members) {
    Assignment& a = out.byPeer[m.peerId];
    a.status = checkManifest(m);
    if (a.status.isOk() && m.lastRevision && m.revision != *m.lastRevision + 1) {
      a.status = mismatch(fmt::format("peer {} gave revision {}, but its last sync was at "
                                      "revision {}: each sync advances it by exactly one",
                                      m.peerId, m.revision, *m.lastRevision));
    }
    if (a.status.isOk()) ok.push_back(&m);
  }
  if (ok.empty()) return out;
  // 2. The group's revision: the newest given. Members behind it (newcomers,
  // or members whose last sync failed while the others' succeeded) do not
  // vote; they receive, and catch up to it.
  for (const Manifest* m : ok) out.revision = std::max(out.revision, m->revision);
  const std::vector<const Manifest*>& current = ok;
  // 3. The vote: members at the group's revision that may serve.
  std::vector<std::pair<Content, std::vector<uint64_t>>> votes;  // content -> its voters
  for (const Manifest* m : current) {
    if (m->revision != out.revision || m->strategy == ecclSyncReceiveOnly) continue;
    Content c = contentOf(*m);
    auto it = std::find_if(votes.begin(), votes.end(), [&](const auto& v) { return v.first == c; });
    if (it == votes.end()) {
      votes.push_back({std::move(c), {m->peerId}});
    } else {
      it->second.push_back(m->peerId);
    }
  }
  if (votes.empty()) {
    for (const Manifest* m : current) {
      out.byPeer[m->peerId].status = mismatch(fmt::format(
          "no member at revision {} can serve the state (every one is receive-only or behind)",
          out.revision));
    }
    return out;
  }
  // The most voters wins; a tie goes to the smallest content (deterministic).
  const auto& winner = *std::min_element(votes.begin(), votes.end(), [](const auto& a, const auto& b) {
    if (a.second.size() != b.second.size()) return a.second.size() > b.second.size();
    return lessContent(a.first, b.first);
  });
  const Content& elected = winner.first;
  std::vector<uint64_t> sources = winner.second;
  std::sort(sources.begin(), sources.end());
  // 4. Each member against the elected content.
  std::vector<uint64_t> receivers;
  for (const Manifest* m : current) {
    Assignment& a = out.byPeer[m->peerId];
    const Content mine = contentOf(*m);
    a.status = compareShape(m->peerId, mine, elected);
    if (!a.status.isOk()) continue;
    for (uint32_t i = 0; i < m->entries.size(); ++i) {
      const wire::SyncEntry& e = m->entries[i];
      if (e.allowDivergence) continue;
      const auto& want = *std::lower_bound(
          elected.begin(), elected.end(), e.name,
          [](const wire::SyncEntry& x, const std::string& name) { return x.name < name; });
      if (want.hash != e.hash) a.fetch.push_back({i, want.hash});
    }
    if (a.fetch.empty()) continue;
    if (m->strategy == ecclSyncSendOnly) {
      a.status = mismatch(fmt::format(
          "peer {} is send-only but its tensor \"{}\" differs from the elected state",
          m->peerId, m->entries[a.fetch.front().index].name));
      a.fetch.clear();
      continue;
    }
    receivers.push_back(m->peerId);
  }
  // 5. Sources per receiver: up to maxSources, rotated so donors share the load.
  std::sort(receivers.begin(), receivers.end());
  const size_t k = std::max<size_t>(1, std::min(maxSources, sources.size()));
  for (size_t r = 0; r < receivers.size(); ++r) {
    Assignment& a = out.byPeer[receivers[r]];
    for (size_t s = 0; s < k; ++s) {
      const uint64_t src = sources[(r + s) % sources.size()];
      a.sources.push_back(src);
      out.byPeer[src].receivers.push_back(receivers[r]);
    }
  }
  return out;
}

}  // namespace eccl::state
