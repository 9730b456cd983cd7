"""The cluster's layout in Redis: the keys of a prefix and the Lua scripts that change
them (docs/CLUSTER.md; the roles of the keys are in :mod:`chatroom_server.cluster.bus`).

A presence change and its announcement on the stream are one script, so one atomic
step: a user joins, is taken over or leaves *exactly once*, whoever notices it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Keys:
    """The key names of one node of the cluster under ``prefix``."""

    prefix: str
    node: str

    @property
    def log(self) -> str:
        return f"{self.prefix}:log"

    @property
    def presence(self) -> str:
        return f"{self.prefix}:presence"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def guests(self) -> str:
        return f"{self.prefix}:guests"

    @property
    def opers(self) -> str:
        """Username key -> ``node|session``: the sessions an IRC O-line made operators."""
        return f"{self.prefix}:opers"

    @property
    def alive(self) -> str:
        """This node's key that expires unless refreshed."""
        return self.alive_of(self.node)

    @property
    def members(self) -> str:
        """The username keys this node holds."""
        return self.members_of(self.node)

    def alive_of(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def members_of(self, node: str) -> str:
        return f"{self.prefix}:members:{node}"

    def registering(self, key: str) -> str:
        return f"{self.prefix}:registering:{key}"


STREAM_MAX: Final = 100_000  # entries kept in P:log (approximately): minutes of traffic
# A registration's mark against guests outlives a node that dies holding it by this much:
# longer than a registration may take (the account store's wait_timeout, 120 s, in a
# login storm, then the hash), short enough to be forgotten.
REGISTERING_MS: Final = 180_000

# A presence value is ``node|name|session``: the node holding the user's session, the
# name as it logged in, and the session's id on that node (its connection's number,
# chatroom_server.conn), which a server operator's kill names (docs/CLUSTER.md, "Server
# operators"). Node names never contain '|'; usernames are ASCII letters, digits, '_' and
# '-'; a session id is digits.
_NODE_OF = (
    "local function node_of(v) return string.match(v, '^([^|]*)|') end\n"
    "local function name_of(v) return string.match(v, '^[^|]*|([^|]*)') end\n"
)


def holder(value: str) -> tuple[str, str, str]:
    """A presence value's (node, name, session id); the id is '' in a value written
    without one."""
    node, _, rest = value.partition("|")
    name, _, session = rest.partition("|")
    return node, name, session


# A claim (KEYS: presence, log, members, opers) ends an O-line's operator session of the
# user: on another node the takeover entry says so; on this one, which writes none, an
# operator entry ``deop`` does. ARGV[7]: the new session's id.
# A claim whose node has stopped waiting for it (ARGV[6], Link.deadline) changes nothing:
# a partition that held it may have let the client log in elsewhere since
# (docs/RELIABILITY.md F8). TIME in a script: Redis >= 5 replicates its effects.
# Returns the old value ('' for none) and the id of the stream entry it wrote ('' for
# none): every entry before it is older than the claim (Roster.apply, F13).
LATE: Final = "late"

CLAIM = (
    _NODE_OF
    + """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000000 + tonumber(now[2]) > tonumber(ARGV[6]) then return 'late' end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[7])
redis.call('SADD', KEYS[3], ARGV[1])
local opered = redis.call('HDEL', KEYS[4], ARGV[1])
local kind = 'j'
if old then
  local node = node_of(old)
  if node == ARGV[2] then
    if opered == 1 then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
                 'k', 'o', 'a', 'deop', 'u', ARGV[3], 'n', ARGV[2])
    end
    return {old, ''}
  end
  redis.call('SREM', ARGV[5] .. ':members:' .. node, ARGV[1])
  kind = 't'
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
                      'k', kind, 'u', ARGV[3], 'n', ARGV[2])
return {old or '', id}
"""
)

# A guest's claim (KEYS: presence, log, members, guests, registering:KEY): only a nick
# nobody has, on any node, and nobody is registering.
CLAIM_GUEST = """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[5])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'j', 'u', ARGV[3], 'n', ARGV[2])
return 1
"""

# A registration begins (KEYS: guests, registering:KEY): not while a guest holds the name.
BEGIN_REGISTRATION = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

END_REGISTRATION = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: presence, log, members, guests, opers.
RELEASE = (
    _NODE_OF
    + """
if redis.call('HGET', KEYS[4], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[4], ARGV[1]) end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or node_of(v) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'l', 'u', ARGV[3], 'n', ARGV[2])
return 1
"""
)

# ARGV[5] '1': a guest's nick (KEYS[4], KEYS[5]: guests, registering:KEY), held again
# only if nobody registers that name now. ARGV[6]: the session's id.
REJOIN = (
    _NODE_OF
    + """
local guest = ARGV[5] == '1'
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  if guest and redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[6])
  redis.call('SADD', KEYS[3], ARGV[1])
  if guest then redis.call('HSET', KEYS[4], ARGV[1], ARGV[2]) end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'j', 'u', ARGV[3], 'n', ARGV[2])
  return 1
end
if node_of(v) == ARGV[2] then
  redis.call('SADD', KEYS[3], ARGV[1])
  if guest then redis.call('HSET', KEYS[4], ARGV[1], ARGV[2]) end
  return 1
end
return 0
"""
)

# KEYS: presence, log, nodes, the node's alive and members keys, guests, opers.
REAP = (
    _NODE_OF
    + """
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if redis.call('HGET', KEYS[6], key) == ARGV[1] then redis.call('HDEL', KEYS[6], key) end
  local v = redis.call('HGET', KEYS[1], key)
  if v and node_of(v) == ARGV[1] then
    redis.call('HDEL', KEYS[1], key)
    redis.call('HDEL', KEYS[7], key)
    local name = name_of(v)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'k', 'l', 'u', name, 'n', ARGV[1])
    n = n + 1
  end
end
redis.call('DEL', KEYS[5])
redis.call('SREM', KEYS[3], ARGV[1])
return n
"""
)

# An IRC O-line made a session an operator (KEYS: presence, opers, log; ARGV: key, node,
# name, session, STREAM_MAX): recorded for the nodes that start later, and announced to
# the running ones, only if that session still holds the user.
OPER = (
    _NODE_OF
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or node_of(v) ~= ARGV[2] or string.match(v, '|([^|]*)$') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
           'k', 'o', 'a', 'oper', 'u', ARGV[3], 'n', ARGV[2])
return 1
"""
)

# An O-line's operator session of this node, written into P:opers again when it is not
# there (Redis restarted empty, or the OPER never reached it), with its stream entry
# (KEYS: presence, opers, log; ARGV: key, node, name, session, STREAM_MAX). Returns 1:
# written; 2: it was there; 0: another session holds the user now (forget it); -1: nobody
# does yet (the node's claim back comes first: try again later).
REOPER = (
    _NODE_OF
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
if node_of(v) ~= ARGV[2] or string.match(v, '|([^|]*)$') ~= ARGV[4] then return 0 end
local mine = ARGV[2] .. '|' .. ARGV[4]
if redis.call('HGET', KEYS[2], ARGV[1]) == mine then return 2 end
redis.call('HSET', KEYS[2], ARGV[1], mine)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
           'k', 'o', 'a', 'oper', 'u', ARGV[3], 'n', ARGV[2])
return 1
"""
)

BEAT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""
