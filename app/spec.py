"""The plugin's single declarative source: tools, inputs, options, outputs, limits, errors.

Pure data, no I/O. Request and response JSON Schemas, openapi.json, the per-operation required
checks and the registration script's sample inputs are all derived from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROJECT = "coze-session-node"
TITLE = "Session Manager"
VERSION = "1.0.0"
PLUGIN_NAME = "session_manager"
DESCRIPTION_ZH = (
    "会话管理节点：为每个用户创建会话，保存 JSON 上下文（合并或替换）、有上限的消息历史和会话状态"
    "（active / expired / closed），30 分钟滑动超时，并发安全，过期自动清理。"
)
DESCRIPTION_EN = (
    "Session management node: per-user sessions holding a JSON context (merge or replace), a capped "
    "message history and a status (active / expired / closed), with a sliding timeout, safe under "
    "concurrency, expired sessions cleaned up automatically."
)

# The spec's usage limits; each is the default of a server setting of the same name.
MAX_SESSIONS = 10
TIMEOUT = 1800
MAX_HISTORY = 1000
MAX_CONTEXT_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TIMEOUT = 30 * 24 * 3600
MAX_USER_ID = 256
MAX_SAFE_INTEGER = 2**53 - 1  # integers every JSON client reads exactly; far inside BSON's int64
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}\Z"  # \Z: Python's $ also matches before a final newline
USER_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,256}\Z"
CURSOR_PATTERN = r"^[0-9A-Za-z_.:-]{1,200}\Z"
TOKEN_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}\Z"  # request ids and lock tokens
MAX_LEASE = 600
MAX_WAIT = 25
MAX_SUMMARY_BYTES = 64 * 1024
MAX_TOKENS = 10_000_000

STATUSES = ("active", "expired", "closed", "deleted", "")
ROLES = ("user", "assistant", "system", "tool")


@dataclass(frozen=True)
class Field:
    """One input, option or output: its JSON type, bilingual description and constraints."""

    type: str
    zh: str
    en: str
    enum: tuple = ()
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    max_items: int | None = None
    items: Field | None = None
    properties: dict[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] | None = None  # of an object's properties; None: all of them

    def but(self, **changes: Any) -> Field:
        """This field with some attributes replaced (a tool-specific default, say)."""
        return Field(**{**self.__dict__, **changes})


MESSAGE_IN = Field(
    "object",
    "一条消息",
    "One message.",
    properties={
        "role": Field("string", "角色", "Who spoke.", enum=ROLES),
        "content": Field("string", "消息内容（最多 64 KiB）", "Message text, at most 64 KiB."),
    },
)

MAX_EDITS = 100
EDIT_OPS = ("set", "remove", "increment", "append", "extend", "remove_value", "test")
EDIT_ROW = Field(
    "object",
    "一项修改：op 操作、path 路径（JSON Pointer）、value 值（JSON 文本）、keep_last 保留最新几项",
    "One edit: op, path (JSON Pointer), value (JSON text), keep_last.",
    properties={
        "op": Field(
            "string",
            "操作：set 设置、remove 删除、increment 加数、append 追加一项、extend 追加多项、"
            "remove_value 删除等于 value 的项、test 检查值相等（否则整次调用不生效）",
            "set, remove, increment (add a number), append (one item), extend (items of an array), "
            "remove_value (every item equal to value), test (apply the call only if the value equals).",
            enum=EDIT_OPS,
        ),
        "path": Field(
            "string",
            "JSON Pointer 路径，例如 /cart/A1/qty（~1 表示 /，~0 表示 ~，/- 表示数组末尾）",
            "JSON Pointer, e.g. /cart/A1/qty (~1 for /, ~0 for ~, /- for the end of an array).",
            max_length=4096,
        ),
        "value": Field(
            "string",
            '值的 JSON 文本，例如 2、"abc"、{"sku":"A1"}；remove 不需要（留空）',
            'The value as JSON text, e.g. 2, "abc", {"sku":"A1"}; empty for remove.',
            default="",
        ),
        "keep_last": Field(
            "integer",
            "append/extend：只保留数组最新的几项（0 表示全部保留）",
            "append/extend: keep only the newest items of the array (0: keep all).",
            default=0,
            minimum=0,
            maximum=MAX_SAFE_INTEGER,
        ),
    },
    required=("op", "path"),
)

INPUTS: dict[str, Field] = {
    "operation": Field(
        "string",
        "操作类型",
        "What to do.",
        enum=(
            "create",
            "get",
            "update",
            "append_messages",
            "history",
            "clear_history",
            "touch",
            "list",
            "close",
            "delete",
            "lock",
            "unlock",
            "compact",
            "rewind",
            "fork",
        ),
    ),
    "user_id": Field(
        "string",
        "用户ID；为空时使用 Coze 的终端用户标识",
        "User id; when empty, the Coze end-user id is used.",
        max_length=MAX_USER_ID,
        pattern=USER_ID_PATTERN,
    ),
    "session_id": Field(
        "string",
        "会话ID（1–128 个字母、数字或 _ - . :）",
        "Session id: 1-128 letters, digits or _ - . :",
        pattern=SESSION_ID_PATTERN,
    ),
    "context": Field(
        "string",
        '上下文数据：JSON 对象的文本，例如 {"key": "value"}',
        'Context data: the text of a JSON object, e.g. {"key": "value"}.',
    ),
    "messages": Field("array", "要追加的消息", "Messages to append.", items=MESSAGE_IN, max_items=MAX_HISTORY),
    "role": Field("string", "单条消息的角色（与 content 一起使用）", "Role of a single message.", enum=ROLES),
    "content": Field("string", "单条消息的内容（与 role 一起使用）", "Content of a single message (with role)."),
    "request_id": Field(
        "string",
        "请求ID：同一会话上重复的请求（重试）不再执行，返回 replayed=true（1–128 个字母、数字或 _ - . :）",
        "Request id: a repeat on the same session (a retry) applies nothing and answers replayed=true "
        "(1-128 letters, digits or _ - . :).",
        pattern=TOKEN_PATTERN,
    ),
    "edits": Field(
        "array",
        "按顺序执行的上下文修改（最多 100 项，全部生效或全部不生效）",
        "Context edits applied in order, all or nothing (at most 100).",
        items=EDIT_ROW,
        max_items=MAX_EDITS,
    ),
    "summary": Field(
        "string",
        "对话摘要（最多 64 KiB）：替代 options.upto_seq 及之前的消息",
        "Conversation summary (at most 64 KiB): replaces the messages up to options.upto_seq.",
    ),
    "lock_token": Field(
        "string",
        "会话锁令牌：会话被锁定时，写操作必须带上 lock 返回的令牌",
        "Lock token: while the session is locked, every write must carry the token lock returned.",
        pattern=TOKEN_PATTERN,
    ),
}

OPTIONS: dict[str, Field] = {
    "timeout": Field(
        "integer",
        "超时时间（秒），每次操作后重新计时",
        "Timeout in seconds, restarted by every operation.",
        default=TIMEOUT,
        minimum=1,
        maximum=MAX_TIMEOUT,
    ),
    "max_history": Field(
        "integer",
        "最大历史记录数",
        "Most messages kept; older ones are dropped.",
        default=MAX_HISTORY,
        minimum=1,
        maximum=MAX_HISTORY,
    ),
    "auto_clean": Field(
        "boolean",
        "自动清理：过期后由数据库删除",
        "Auto clean: the database purges the session once expired.",
        default=True,
    ),
    "persist": Field(
        "boolean",
        "持久化：写入落盘（多数派、日志）后才确认",
        "Persist: acknowledge only once durable (majority, journaled).",
        default=True,
    ),
    "merge": Field(
        "boolean",
        "合并（JSON Merge Patch）；false 时整体替换",
        "Merge (JSON Merge Patch); false replaces the whole context.",
        default=True,
    ),
    "expected_version": Field(
        "integer",
        "仅当会话版本等于此值时写入（0 表示不检查）",
        "Write only if the session is at this version (0: no check).",
        minimum=0,
        maximum=MAX_SAFE_INTEGER,
    ),
    "on_overflow": Field(
        "string",
        "超过最大历史记录数时：drop 丢弃最旧的，reject 拒绝",
        "Past max_history: drop the oldest, or reject the append.",
        enum=("drop", "reject"),
        default="drop",
    ),
    "limit": Field(
        "integer",
        "每页条数",
        "Items per page.",
        default=50,
        minimum=1,
        maximum=MAX_HISTORY,
    ),
    "cursor": Field(
        "string",
        "分页游标：上一页返回的 next_cursor",
        "Paging cursor: next_cursor of the previous page.",
        pattern=CURSOR_PATTERN,
    ),
    "status": Field(
        "string",
        "按状态筛选",
        "Only sessions in this status.",
        enum=("all", "active", "expired", "closed"),
        default="all",
    ),
    "lease": Field(
        "integer",
        "锁的租期（秒），到期自动释放",
        "Lock lease in seconds; the lock is released when it runs out.",
        default=30,
        minimum=1,
        maximum=MAX_LEASE,
    ),
    "wait": Field(
        "integer",
        "锁被他人持有时最多等待的秒数（0 表示不等待）",
        "Seconds to wait for a lock someone else holds (0: do not wait).",
        default=0,
        minimum=0,
        maximum=MAX_WAIT,
    ),
    "format": Field(
        "string",
        "返回格式：messages 消息数组；transcript 另附一段 role: content 文本",
        "messages: the page as an array; transcript: also as one text of role: content lines.",
        enum=("messages", "transcript"),
        default="messages",
    ),
    "roles": Field(
        "string",
        "只返回这些角色的消息，逗号分隔（空表示全部）",
        "Only messages of these roles, comma-separated (empty: all).",
        pattern=r"^[a-z, ]{0,64}\Z",
    ),
    "max_tokens": Field(
        "integer",
        "令牌预算：返回能放进预算的最新消息（0 表示不限）",
        "Token budget: the newest messages that fit (0: no budget).",
        minimum=0,
        maximum=MAX_TOKENS,
    ),
    "upto_seq": Field(
        "integer",
        "压缩到此序号（含）为止的消息",
        "Compact the messages up to this seq (inclusive).",
        minimum=1,
        maximum=MAX_SAFE_INTEGER,
    ),
    "to_seq": Field(
        "integer",
        "回退到此序号：删除序号大于它的消息（0 表示全部删除）",
        "Rewind to this seq: drop every message after it (0: all of them).",
        minimum=0,
        maximum=MAX_SAFE_INTEGER,
    ),
    "at_seq": Field(
        "integer",
        "分叉点：新会话保留序号不大于它的消息（0 表示全部）",
        "Fork point: the new session keeps the messages up to this seq (0: all).",
        minimum=0,
        maximum=MAX_SAFE_INTEGER,
    ),
    "new_session_id": Field(
        "string",
        "新会话的ID（为空则自动生成）",
        "The new session's id (empty: generated).",
        pattern=SESSION_ID_PATTERN,
    ),
    "resume": Field(
        "boolean",
        "自动重连：会话已超时但尚未清理时先恢复它（如同 touch）",
        "Auto-resume: an expired session that is still stored is first revived (as touch would).",
        default=False,
    ),
    # no declared default: Coze would send it on every call and override the service's ERROR_LANG
    "lang": Field(
        "string",
        "错误信息语言（默认：服务的 ERROR_LANG，通常为 zh）",
        "Language of error messages (default: the service's ERROR_LANG, zh unless set).",
        enum=("zh", "en"),
    ),
}

SESSION_ITEM = Field(
    "object",
    "会话摘要",
    "A session summary.",
    properties={
        "session_id": Field("string", "会话ID", "Session id."),
        "status": Field("string", "会话状态", "Session status."),
        "version": Field("integer", "版本号", "Version."),
        "created_at": Field("string", "创建时间（UTC）", "Created at (UTC, ISO 8601)."),
        "updated_at": Field("string", "更新时间（UTC）", "Updated at (UTC, ISO 8601)."),
        "expires_at": Field("string", "过期时间（UTC）", "Expires at (UTC, ISO 8601)."),
        "expires_in": Field("integer", "剩余秒数", "Seconds left."),
        "message_count": Field("integer", "消息条数", "Messages stored."),
    },
)
MESSAGE_OUT = Field(
    "object",
    "一条消息",
    "One message.",
    properties={
        "seq": Field("integer", "序号（递增，不重复）", "Sequence number, increasing, never reused."),
        "role": Field("string", "角色", "Role."),
        "content": Field("string", "内容", "Content."),
        "ts": Field("string", "服务器时间（UTC）", "Server time (UTC, ISO 8601)."),
    },
)

OUTPUTS: dict[str, Field] = {
    "session_id": Field("string", "会话ID", "Session id."),
    "status": Field(
        "string",
        "会话状态：active、expired、closed、deleted；未找到时为空",
        "Status: active, expired, closed, deleted; empty when no session was found.",
    ),
    "context": Field("string", "上下文数据（JSON 文本）", "Context data as JSON text; empty when none."),
    "version": Field("integer", "版本号，每次修改加 1", "Version, +1 on every change."),
    "error": Field("string", "错误信息；成功时为空", "Error message; empty on success."),
    "error_code": Field("string", "错误码；成功时为空", "Error code; empty on success."),
    "created_at": Field("string", "创建时间（UTC）", "Created at (UTC, ISO 8601)."),
    "updated_at": Field("string", "更新时间（UTC）", "Updated at (UTC, ISO 8601)."),
    "expires_at": Field("string", "过期时间（UTC）", "Expires at (UTC, ISO 8601)."),
    "expires_in": Field("integer", "剩余秒数", "Seconds until expiry."),
    "message_count": Field("integer", "消息条数", "Messages in the history."),
    "timeout": Field("integer", "超时时间（秒）", "The session's timeout in seconds."),
    "max_history": Field("integer", "最大历史记录数", "The most messages the session keeps."),
    "auto_clean": Field("boolean", "过期后是否自动清理", "Whether the session is purged once expired."),
    "locked_until": Field(
        "string",
        "会话锁到期时间（UTC）；未锁定时为空",
        "The session lock's expiry (UTC, ISO 8601); empty when unlocked.",
    ),
    "summary": Field("string", "对话摘要；没有时为空", "The conversation summary (compact); empty when none."),
    "summary_upto": Field(
        "integer", "摘要覆盖到的消息序号；没有摘要时为 0", "The last seq the summary covers; 0 when none."
    ),
    "forked_from": Field(
        "string", "分叉来源的会话ID；不是分叉得到的会话为空", "The session this one was forked from; empty if none."
    ),
    "forked_at_seq": Field(
        "integer", "分叉时截取到的消息序号；不是分叉得到的会话为 0", "The seq the fork was cut at; 0 if not a fork."
    ),
    "created": Field("boolean", "是否新建", "True when a new session was created."),
    "replayed": Field(
        "boolean",
        "重复的请求：未再执行，返回当前状态",
        "A repeat of an earlier request_id: nothing applied again, the current state returned.",
    ),
    "resumed": Field("boolean", "会话已超时并被自动恢复", "The session had expired and was revived (options.resume)."),
    "lock_token": Field(
        "string", "本次获得或续期的锁令牌；否则为空", "The lock token this call took or renewed; empty otherwise."
    ),
    "dropped": Field(
        "integer",
        "被丢弃的消息数（追加时超出上限的最旧消息；回退时删除的消息）",
        "Messages dropped: the oldest past max_history (append), or those after to_seq (rewind).",
    ),
    "messages": Field("array", "消息（按时间顺序）", "Messages, oldest first.", items=MESSAGE_OUT),
    "next_cursor": Field("string", "下一页游标；没有更多时为空", "Cursor of the next page; empty when no more."),
    "transcript": Field(
        "string",
        "本页的文本（每行 role: content，最早的在前；到达最早消息时以摘要开头）",
        "The page as text, one role: content line per message, oldest first (from the summary when it "
        "reaches the oldest kept message).",
    ),
    "tokens": Field("integer", "本页的估计令牌数", "The page's estimated tokens."),
    "sessions": Field("array", "会话列表", "The user's sessions.", items=SESSION_ITEM),
}
BASE_OUTPUTS = tuple(list(OUTPUTS)[: list(OUTPUTS).index("forked_at_seq") + 1])


@dataclass(frozen=True)
class Operation:
    """One operation: what it needs, which inputs and options it takes, what it adds to outputs."""

    name: str
    zh: str
    en: str
    needs: tuple[str, ...]
    inputs: tuple[str, ...]
    options: tuple[str, ...]
    extras: tuple[str, ...] = ()
    option_overrides: dict[str, dict] = field(default_factory=dict)
    option_needs: tuple[str, ...] = ()  # options without which it cannot run: marked required for Coze


_ID = ("user_id", "session_id")
_WRITE = (*_ID, "request_id", "lock_token")  # a write: retried safely by request_id, guarded by the lock
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "create",
            "创建会话，可带初始上下文；已存在的同名会话直接返回（created=false）",
            "Create a session with an optional initial context; an existing session of the same "
            "id is returned instead (created=false).",
            ("user_id",),
            (*_ID, "context", "request_id"),
            ("timeout", "max_history", "auto_clean", "persist", "lang"),
            ("created", "replayed"),
        ),
        Operation(
            "get",
            "读取会话状态和上下文",
            "Read a session's state and context.",
            _ID,
            (*_ID, "lock_token"),  # the token is used only to resume a locked session (options.resume)
            ("resume", "lang"),
            ("resumed",),
        ),
        Operation(
            "update",
            "修改上下文：合并（默认）或替换，和/或按路径修改（edits：设置、删除、加数、追加、条件检查）",
            "Change the context: merge (default, JSON Merge Patch) or replace, and/or edit it by path "
            "(edits: set, remove, increment, append, extend, remove_value, test).",
            _ID,
            (*_WRITE, "context", "edits"),
            ("merge", "expected_version", "resume", "persist", "lang"),
            ("replayed", "resumed"),
        ),
        Operation(
            "append_messages",
            "追加一条或多条消息到历史",
            "Append one or more messages to the history.",
            _ID,
            (*_WRITE, "messages", "role", "content"),
            ("on_overflow", "expected_version", "resume", "persist", "lang"),
            ("replayed", "resumed", "dropped", "messages"),
        ),
        Operation(
            "history",
            "读取最近的消息（按时间顺序），可分页向前翻",
            "Read the newest messages, oldest first; next_cursor pages back.",
            _ID,
            (*_ID, "lock_token"),
            ("limit", "cursor", "format", "roles", "max_tokens", "resume", "lang"),
            ("resumed", "messages", "next_cursor", "transcript", "tokens"),
        ),
        Operation(
            "clear_history",
            "清空消息历史，保留会话",
            "Drop all messages, keep the session.",
            _ID,
            _WRITE,
            ("expected_version", "persist", "lang"),
            ("replayed",),
        ),
        Operation(
            "touch",
            "延长超时；可恢复尚未清理的过期会话",
            "Extend the timeout; revives an expired session that is still stored.",
            _ID,
            _WRITE,
            ("timeout", "persist", "lang"),
            ("replayed",),
            option_overrides={"timeout": {"default": None}},
        ),
        Operation(
            "list",
            "列出用户的会话（分页）",
            "List the user's sessions, paged.",
            ("user_id",),
            ("user_id",),
            ("limit", "cursor", "status", "lang"),
            ("sessions", "next_cursor"),
            option_overrides={"limit": {"default": 20, "maximum": 100}},
        ),
        Operation(
            "close",
            "结束会话：可读，不可写，不再占用会话数",
            "End a session: readable, no longer writable, no longer counted.",
            _ID,
            _WRITE,
            ("expected_version", "persist", "lang"),
            ("replayed",),
        ),
        Operation(
            "delete",
            "立即删除会话及其消息",
            "Delete the session and its messages now.",
            _ID,
            _WRITE,
            ("persist", "lang"),
            ("replayed",),
        ),
        Operation(
            "lock",
            "锁定会话一轮（会话锁）：返回 lock_token，锁定期间写操作须带上它；带上当前令牌则续期",
            "Lock the session for a turn (the session lock): answers lock_token, which every write needs "
            "while the lock is held; with the current token it renews the lease.",
            _ID,
            _WRITE,
            ("lease", "wait", "persist", "lang"),
            ("replayed", "lock_token"),
        ),
        Operation(
            "unlock",
            "释放会话锁",
            "Release the session lock.",
            (*_ID, "lock_token"),
            _WRITE,
            ("persist", "lang"),
            ("replayed",),
        ),
        Operation(
            "compact",
            "压缩历史：用工作流自己写的摘要替代 options.upto_seq 及之前的消息，之后的消息保留",
            "Compact the history: a summary the workflow wrote replaces the messages up to "
            "options.upto_seq; later messages stay.",
            (*_ID, "summary"),
            (*_WRITE, "summary"),
            ("upto_seq", "expected_version", "persist", "lang"),
            ("replayed",),
            option_needs=("upto_seq",),
        ),
        Operation(
            "rewind",
            "回退：删除 options.to_seq 之后的消息（撤销一轮、重新生成回答）；序号不再复用",
            "Rewind: drop the messages after options.to_seq (undo a turn, regenerate an answer); seqs are "
            "never reused.",
            _ID,
            _WRITE,
            ("to_seq", "expected_version", "persist", "lang"),
            ("replayed", "dropped"),
            option_needs=("to_seq",),
        ),
        Operation(
            "fork",
            "分叉：用此会话的上下文、摘要和 options.at_seq 及之前的消息新建同一用户的会话（尝试另一个分支）",
            "Fork: a new session of the same user with this session's context, summary and messages up "
            "to options.at_seq (try another branch); the answer is the new session's.",
            _ID,
            (*_ID, "request_id"),
            ("at_seq", "new_session_id", "timeout", "max_history", "auto_clean", "persist", "lang"),
            ("created", "replayed"),
            option_overrides={
                "timeout": {"default": None},
                "max_history": {"default": None},
                "auto_clean": {"default": None},
            },
        ),
    )
}


@dataclass(frozen=True)
class Tool:
    """One Coze tool: an HTTP path, its operationId, and the operation(s) it serves."""

    name: str
    path: str
    zh: str
    en: str
    operations: tuple[str, ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        if len(self.operations) > 1:
            return tuple(INPUTS)
        return OPERATIONS[self.operations[0]].inputs

    @property
    def required(self) -> tuple[str, ...]:
        if len(self.operations) > 1:
            return ("operation",)
        return tuple(n for n in OPERATIONS[self.operations[0]].needs if n != "user_id")

    @property
    def required_options(self) -> tuple[str, ...]:
        if len(self.operations) > 1:
            return ()
        return OPERATIONS[self.operations[0]].option_needs

    @property
    def outputs(self) -> tuple[str, ...]:
        extras = {e for op in self.operations for e in OPERATIONS[op].extras}
        return tuple(n for n in OUTPUTS if n in BASE_OUTPUTS or n in extras)

    def options(self) -> dict[str, Field]:
        """The tool's options with their per-operation defaults applied.

        The `operation` tool declares a default only where every operation using the option agrees:
        Coze fills declared defaults in, so touch must not receive create's timeout of 1800.
        """
        fields: dict[str, Field] = {}
        for name in self.operations:
            op = OPERATIONS[name]
            for n in op.options:
                f = OPTIONS[n].but(**op.option_overrides.get(n, {}))
                if n in fields and (fields[n].default, fields[n].maximum) != (f.default, f.maximum):
                    f = f.but(default=None, maximum=max(fields[n].maximum or 0, f.maximum or 0) or None)
                fields[n] = f
        return {n: fields[n] for n in OPTIONS if n in fields}


MANAGE_TOOL = Tool(
    "session_manage",
    "/v1/session",
    "会话管理：用 operation 选择操作（create、get、update、append_messages、history、"
    "clear_history、touch、list、close、delete、lock、unlock、compact、rewind、fork）",
    "Session management: choose the operation with `operation` (create, get, update, "
    "append_messages, history, clear_history, touch, list, close, delete, lock, unlock, compact, rewind, fork).",
    tuple(OPERATIONS),
)
TOOLS: tuple[Tool, ...] = (
    MANAGE_TOOL,
    *(Tool(f"session_{op.name}", f"/v1/session/{op.name}", op.zh, op.en, (op.name,)) for op in OPERATIONS.values()),
)
TOOLS_BY_NAME = {t.name: t for t in TOOLS}


@dataclass(frozen=True)
class ErrorSpec:
    code: str
    http_status: int
    zh: str
    en: str


ERRORS: dict[str, ErrorSpec] = {
    e.code: e
    for e in (
        ErrorSpec("INVALID_ARGUMENT", 200, "参数错误：{field} {reason}", "invalid argument: {field} {reason}"),
        ErrorSpec("SESSION_NOT_FOUND", 200, "会话不存在", "session not found"),
        ErrorSpec("SESSION_EXPIRED", 200, "会话已超时", "session expired"),
        ErrorSpec("SESSION_CLOSED", 200, "会话已关闭", "session is closed"),
        ErrorSpec(
            "SESSION_LIMIT_EXCEEDED",
            200,
            "会话数已达上限（{limit} 个活动会话）",
            "session limit reached ({limit} active sessions)",
        ),
        ErrorSpec(
            "CONTEXT_TOO_LARGE",
            200,
            "上下文数据过大（{size} 字节，上限 {limit} 字节）",
            "context too large ({size} bytes, limit {limit})",
        ),
        ErrorSpec(
            "HISTORY_LIMIT",
            200,
            "消息历史已满（上限 {limit} 条）",
            "message history is full (limit {limit})",
        ),
        ErrorSpec(
            "VERSION_CONFLICT",
            200,
            "版本冲突：当前版本为 {current}",
            "version conflict: the session is at version {current}",
        ),
        ErrorSpec("SESSION_LOCKED", 200, "会话已被锁定（见 locked_until）", "session is locked (see locked_until)"),
        ErrorSpec(
            "LOCK_NOT_HELD",
            200,
            "未持有会话锁：令牌已释放、已过期或属于其他持有者",
            "lock not held: the token was released, has expired, or is another holder's",
        ),
        ErrorSpec(
            "CONDITION_FAILED",
            200,
            "条件不满足：{field}（test）不成立，未做任何修改",
            "condition failed: {field} (test) does not hold; nothing was changed",
        ),
        ErrorSpec("UNAUTHORIZED", 401, "未授权：服务令牌缺失或错误", "unauthorized: missing or wrong service token"),
        # GET /metrics with METRICS_TOKEN set: the token it wants is not the service token (errors.Unauthorized)
        ErrorSpec(
            "PAYLOAD_TOO_LARGE", 413, "请求体过大（上限 {limit} 字节）", "request body too large (limit {limit} bytes)"
        ),
        ErrorSpec("STORAGE_UNAVAILABLE", 503, "存储暂不可用，请重试", "storage unavailable, retry later"),
        ErrorSpec("INTERNAL", 500, "内部错误", "internal error"),
    )
}

# STORAGE_UNAVAILABLE for a write whose answer was lost: it may have been applied.
UNKNOWN_OUTCOME = (
    "存储暂不可用：写入结果未知（可能已生效），请重试",
    "storage unavailable: the write may have been applied; retry it",
)

# UNAUTHORIZED from GET /metrics: it wants METRICS_TOKEN, not the service token.
METRICS_UNAUTHORIZED = (
    "未授权：METRICS_TOKEN 缺失或错误（Authorization: Bearer <METRICS_TOKEN>）",
    "unauthorized: missing or wrong METRICS_TOKEN (send Authorization: Bearer <METRICS_TOKEN>)",
)

# HISTORY_LIMIT when MongoDB refuses a document past its 16 MiB (nothing was stored).
DOCUMENT_TOO_LARGE = (
    "会话数据超过 MongoDB 单个文档 16 MiB 的上限，未保存",
    "the session would pass MongoDB's 16 MiB per document; nothing was stored",
)

# Reasons for INVALID_ARGUMENT, by jsonschema keyword (and a few of the core's own checks).
REASONS: dict[str, tuple[str, str]] = {
    "required": ("不能为空", "is required"),
    "type": ("类型应为 {expected}", "must be of type {expected}"),
    "enum": ("取值应为 {expected} 之一", "must be one of {expected}"),
    "pattern": ("格式不正确", "has an invalid format"),
    "maxLength": ("过长（最多 {expected} 个字符）", "is too long (at most {expected} characters)"),
    "minLength": ("不能为空", "must not be empty"),
    "minimum": ("应不小于 {expected}", "must be at least {expected}"),
    "maximum": ("应不大于 {expected}", "must be at most {expected}"),
    "maxItems": ("最多 {expected} 项", "must have at most {expected} items"),
    "minItems": ("不能为空", "must not be empty"),
    "additionalProperties": ("不是可用的字段", "is not a known field"),
    "json_object": ("应为 JSON 对象", "must be a JSON object"),
    "json_text": ("不是有效的 JSON 对象文本", "is not valid JSON object text"),
    "nesting": ("嵌套过深（最多 {expected} 层）", "is nested too deeply (at most {expected} levels)"),
    "message_size": ("消息过大（最多 {expected} 字节）", "message too large (at most {expected} bytes)"),
    "role_content": ("需要 messages 或 role 与 content", "needs messages, or role and content"),
    "body": ("请求体应为 JSON 对象", "the request body must be a JSON object"),
    "json_body": ("不是有效的 JSON", "is not valid JSON"),
    "no_messages": ("会话没有可压缩的消息", "the session has no messages to compact"),
    "upto_last": (
        "应不大于 {expected}（会话最后一条消息的序号）",
        "must be at most {expected}, the seq of the session's last message",
    ),
    "upto_summary": (
        "应不小于 {expected}（当前摘要已覆盖到的序号 summary_upto）",
        "must be at least {expected}, what the current summary covers (summary_upto)",
    ),
    "operation": ("不支持的操作", "is not a supported operation"),
    "no_such_tool": ("不是此服务的工具", "is not a tool of this service"),
    "schema": ("不符合上下文结构（{expected}）", "does not match the context schema ({expected})"),
    "method": ("只接受 {expected} 请求", "accepts {expected} only"),
    "unreadable": ("无法读取（格式错误、中断或超时）", "could not be read (malformed, cut off or too slow)"),
    "http": ("无效（HTTP {expected}）", "is invalid (HTTP {expected})"),
    "int64": ("超出 64 位整数范围（{expected}）", "is outside the 64-bit integer range ({expected})"),
    "update_needs": ("需要 context、fields 或 edits 之一", "needs context, fields or edits"),
    "pointer": (
        "不是有效的 JSON Pointer（以 / 开头，~0 表示 ~，~1 表示 /）",
        "is not a valid JSON Pointer (starts with /, ~0 for ~, ~1 for /)",
    ),
    "pointer_root": ("不能指向整个上下文（请用 context）", "must not point at the whole context (use context)"),
    "json_value": ("不是有效的 JSON 文本", "is not valid JSON text"),
    "edit_number": ("应为 JSON 数字", "must be a JSON number"),
    "edit_array": ("应为 JSON 数组", "must be a JSON array"),
    "edit_not_number": ("路径上的值不是数字", "the value at its path is not a number"),
    "edit_overflow": ("结果超出 JSON 数字的范围", "the result is out of the range of a JSON number"),
    "edit_not_array": ("路径上的值不是数组", "the value at its path is not an array"),
    "edit_path": (
        "路径无法到达（{expected} 不是对象，或数组下标越界）",
        "cannot reach its path ({expected} is not an object, or an array index is out of range)",
    ),
}
