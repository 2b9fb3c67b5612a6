"""A DynamoDB stand-in for the bench: DynamoDB's JSON 1.0 protocol, in memory, answered at
once, so that the bench measures the gateway rather than DynamoDB Local's writes.

    python bench/dynamo_standin.py --port 18001
    AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:18001 ...   # what the gateway and setup use

It measures the gateway, not DynamoDB's semantics. What it does:

- Operations: CreateTable, DescribeTable, ListTables, DeleteTable, UpdateTimeToLive,
  DescribeTimeToLive (what `dynoyard.local.tables.ensure_tables` and the teardown send);
  GetItem, PutItem, DeleteItem, UpdateItem, TransactWriteItems (Put, Update, Delete,
  ConditionCheck), TransactGetItems, BatchGetItem, BatchWriteItem, Query, Scan. Anything
  else answers 400 `UnknownOperationException`.
- Items are kept as sent, by the table's key schema, so a key item, the org item (balance,
  settings such as `cache_enabled`), cache entries and usage records read back as written.
- Update expressions are applied: SET (`a = :v`, `a = b + :v`, `a - :v`, `if_not_exists`,
  `list_append`, nested map paths), ADD (numbers and sets), REMOVE, DELETE; numbers are
  decimal, like DynamoDB's. ReturnValues NONE/ALL_OLD/ALL_NEW/UPDATED_OLD/UPDATED_NEW.
- Condition, filter and key-condition expressions are evaluated (comparisons, BETWEEN, IN,
  AND/OR/NOT, attribute_exists/attribute_not_exists/attribute_type, begins_with, contains,
  size); a failed condition answers ConditionalCheckFailedException (with the item when
  ReturnValuesOnConditionCheckFailure is ALL_OLD) or TransactionCanceledException with
  cancellation reasons, nothing applied. An expression it can not parse is taken as true
  and counted (`conditions_unparsed` in /stats, logged once): the stand-in then stops
  checking that condition rather than failing the bench.
- Not modelled: write conflicts, throttling, capacity, item size limits, TTL deletion (like
  DynamoDB Local, nothing expires; the gateway's reads check `expires_at` themselves),
  ProjectionExpression (whole items are returned), consistency (every read is consistent),
  signatures (any credentials are accepted). Single-threaded: every call is atomic.

Also `GET /stats` (calls by operation, conditions failed or unparsed, items per table) and
`POST /stats` (the same, then the counters reset); any other GET answers 200 (health).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

AV = dict[str, Any]  # one attribute value, e.g. {"S": "x"}
Item = dict[str, AV]
Path = list[str | int]

JSON_HEADERS = [(b"content-type", b"application/x-amz-json-1.0")]
ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
DECIMAL = Context(prec=38)  # DynamoDB keeps 38 significant digits


class Fault(Exception):
    """An error answer: 400 with DynamoDB's `__type` and message."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def _validation(message: str) -> Fault:
    return Fault("ValidationException", message)


# -- expressions -------------------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<index>\[\d+\])|(?P<op><>|<=|>=|[=<>+\-(),.]))"
)
COMPARATORS = {"=", "<>", "<", "<=", ">", ">="}
CONDITION_FUNCTIONS = {
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
}


class Unparsed(Exception):
    """An expression this stand-in does not understand."""


class Parser:
    """One expression, parsed into a tree of tuples. Attribute names (`#n`) and values (`:v`)
    stay placeholders, bound per request (`_bind`), so that a tree can be cached for the next
    request that sends the same expression, whatever names it maps (the gateway's hold names
    an attribute after its request: a cache keyed on the names would grow by every request)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise Unparsed(text)
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.at = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise Unparsed("unexpected end")
        self.at += 1
        return token

    def expect(self, text: str) -> None:
        _kind, got = self.take()
        if got.upper() != text.upper():
            raise Unparsed(f"expected {text}, got {got}")

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() in words:
            self.at += 1
            return token[1].upper()
        return None

    def done(self) -> bool:
        return self.at >= len(self.tokens)

    # paths and operands

    def path(self) -> Path:
        path: Path = [self._name(self.take())]
        while True:
            token = self.peek()
            if token == ("op", "."):
                self.at += 1
                path.append(self._name(self.take()))
            elif token and token[0] == "index":
                self.at += 1
                path.append(int(token[1][1:-1]))
            else:
                return path

    def _name(self, token: tuple[str, str]) -> str:
        kind, text = token
        if kind in ("name", "word"):  # a `#name` is bound per request
            return text
        raise Unparsed(f"not a name: {text}")

    def operand(self) -> tuple[Any, ...]:
        kind, text = self.peek() or ("", "")
        if kind == "value":
            self.at += 1
            return ("placeholder", text)
        if kind == "word" and self.peek(1) == ("op", "("):
            self.at += 2
            args = [self.operand()]
            while self.peek() == ("op", ","):
                self.at += 1
                args.append(self.operand())
            self.expect(")")
            return ("call", text.lower(), args)
        return ("path", self.path())

    # conditions: OR < AND < NOT < comparison / function / parentheses

    def condition(self) -> tuple[Any, ...]:
        left = self._and()
        while self.keyword("OR"):
            left = ("or", left, self._and())
        return left

    def _and(self) -> tuple[Any, ...]:
        left = self._not()
        while self.keyword("AND"):
            left = ("and", left, self._not())
        return left

    def _not(self) -> tuple[Any, ...]:
        if self.keyword("NOT"):
            return ("not", self._not())
        if self.peek() == ("op", "("):
            self.at += 1
            inner = self.condition()
            self.expect(")")
            return inner
        left = self.operand()
        token = self.peek()
        if token and token[0] == "op" and token[1] in COMPARATORS:
            self.at += 1
            return ("cmp", token[1], left, self.operand())
        if self.keyword("BETWEEN"):
            low = self.operand()
            self.expect("AND")
            return ("between", left, low, self.operand())
        if self.keyword("IN"):
            self.expect("(")
            options = [self.operand()]
            while self.peek() == ("op", ","):
                self.at += 1
                options.append(self.operand())
            self.expect(")")
            return ("in", left, options)
        if left[0] == "call" and left[1] in CONDITION_FUNCTIONS:
            return left
        raise Unparsed("not a condition")

    # update expressions

    def update(self) -> list[tuple[Any, ...]]:
        actions: list[tuple[Any, ...]] = []
        while not self.done():
            clause = self.keyword("SET", "REMOVE", "ADD", "DELETE")
            if clause is None:
                raise Unparsed("expected SET, REMOVE, ADD or DELETE")
            while True:
                target = self.path()
                if clause == "SET":
                    self.expect("=")
                    value = self.operand()
                    token = self.peek()
                    if token in (("op", "+"), ("op", "-")):
                        self.at += 1
                        value = ("arith", token[1], value, self.operand())  # type: ignore[index]
                    actions.append(("SET", target, value))
                elif clause == "REMOVE":
                    actions.append(("REMOVE", target, None))
                else:
                    actions.append((clause, target, self.operand()))
                if self.peek() != ("op", ","):
                    break
                self.at += 1
        return actions


def get_path(item: Item, path: Path) -> AV | None:
    current: Any = item.get(path[0]) if isinstance(path[0], str) else None
    for step in path[1:]:
        if current is None:
            return None
        if isinstance(step, int):
            items = current.get("L")
            current = items[step] if items is not None and step < len(items) else None
        else:
            current = (current.get("M") or {}).get(step)
    return current


def set_path(item: Item, path: Path, value: AV | None) -> None:
    """Sets (or with None removes) `path` in `item`, copying each container it changes:
    answers already sent may share them."""
    if len(path) == 1:
        if value is None:
            item.pop(str(path[0]), None)
        else:
            item[str(path[0])] = value
        return
    head = str(path[0])
    parent = item.get(head)
    if parent is None:
        if value is None:
            return
        parent = {"M": {}}  # lenient: DynamoDB would refuse a missing parent
    item[head] = _with_child(parent, path[1:], value)


def _with_child(container: AV, rest: Path, value: AV | None) -> AV:
    step = rest[0]
    if isinstance(step, int):
        items = list(container.get("L") or [])
        if len(rest) > 1:
            child = items[step] if step < len(items) else {"M": {}}
            value = _with_child(child, rest[1:], value)
        if value is None:
            if step < len(items):
                items.pop(step)
        elif step < len(items):
            items[step] = value
        else:
            items.append(value)
        return {"L": items}
    members = dict(container.get("M") or {})
    if len(rest) > 1:
        value = _with_child(members.get(step) or {"M": {}}, rest[1:], value)
    if value is None:
        members.pop(step, None)
    else:
        members[step] = value
    return {"M": members}


def number(value: AV | None) -> Decimal:
    if value is None or "N" not in value:
        raise _validation("An operand in the update expression has an incorrect data type")
    return Decimal(value["N"])


def encode_number(value: Decimal) -> AV:
    text = format(value.normalize(DECIMAL), "f")
    return {"N": text}


def evaluate(operand: tuple[Any, ...], item: Item) -> AV | None:
    kind = operand[0]
    if kind == "value":
        return operand[1]  # type: ignore[no-any-return]
    if kind == "path":
        return get_path(item, operand[1])
    if kind == "arith":
        left, right = number(evaluate(operand[2], item)), number(evaluate(operand[3], item))
        return encode_number(DECIMAL.add(left, right if operand[1] == "+" else -right))
    name, args = operand[1], operand[2]
    if name == "if_not_exists":
        found = evaluate(args[0], item)
        return found if found is not None else evaluate(args[1], item)
    if name == "list_append":
        first, second = evaluate(args[0], item), evaluate(args[1], item)
        return {"L": list((first or {}).get("L") or []) + list((second or {}).get("L") or [])}
    if name == "size":
        found = evaluate(args[0], item)
        if found is None:
            return None
        ((kind_, raw),) = found.items()
        size = len(base64.b64decode(raw)) if kind_ == "B" else len(raw)
        return {"N": str(size)}
    raise Unparsed(f"function {name}")


def _comparable(value: AV) -> tuple[str, Any]:
    ((kind, raw),) = value.items()
    if kind == "N":
        return kind, Decimal(raw)
    if kind == "B":
        return kind, base64.b64decode(raw)
    if kind in ("SS", "BS"):
        return kind, frozenset(raw)
    if kind == "NS":
        return kind, frozenset(Decimal(x) for x in raw)
    if kind in ("M", "L"):
        return kind, json.dumps(raw, sort_keys=True)
    return kind, raw


def compare(op: str, left: AV | None, right: AV | None) -> bool:
    if left is None or right is None:
        return op == "<>" and (left is None) != (right is None)
    (lk, lv), (rk, rv) = _comparable(left), _comparable(right)
    if op == "=":
        return bool(lk == rk and lv == rv)
    if op == "<>":
        return bool(lk != rk or lv != rv)
    if lk != rk or lk not in ("N", "S", "B"):
        return False
    return bool(
        {"<": lv < rv, "<=": lv <= rv, ">": lv > rv, ">=": lv >= rv}[op]  # type: ignore[operator]
    )


def holds(condition: tuple[Any, ...], item: Item) -> bool:
    kind = condition[0]
    if kind == "and":
        return holds(condition[1], item) and holds(condition[2], item)
    if kind == "or":
        return holds(condition[1], item) or holds(condition[2], item)
    if kind == "not":
        return not holds(condition[1], item)
    if kind == "cmp":
        return compare(condition[1], evaluate(condition[2], item), evaluate(condition[3], item))
    if kind == "between":
        value = evaluate(condition[1], item)
        low, high = evaluate(condition[2], item), evaluate(condition[3], item)
        return compare(">=", value, low) and compare("<=", value, high)
    if kind == "in":
        value = evaluate(condition[1], item)
        return any(compare("=", value, evaluate(o, item)) for o in condition[2])
    name, args = condition[1], condition[2]
    if name == "attribute_exists":
        return evaluate(args[0], item) is not None
    if name == "attribute_not_exists":
        return evaluate(args[0], item) is None
    found = evaluate(args[0], item)
    other = evaluate(args[1], item)
    if found is None or other is None:
        return False
    if name == "attribute_type":
        return next(iter(found)) == other.get("S")
    if name == "begins_with":
        (kind_, raw), (_, prefix) = next(iter(found.items())), next(iter(other.items()))
        return kind_ in ("S", "B") and isinstance(raw, str) and raw.startswith(prefix)
    # contains: a substring of a string, a member of a set or list
    ((kind_, raw),) = found.items()
    if kind_ == "S":
        return isinstance(other.get("S"), str) and other["S"] in raw
    if kind_ in ("SS", "NS", "BS"):
        return next(iter(other.values())) in raw
    if kind_ == "L":
        return other in raw
    return False


# -- tables -----------------------------------------------------------------------------


def _scalar(value: AV | None, name: str) -> str:
    if not value or len(value) != 1:
        raise _validation(f"One or more parameter values were invalid: missing key {name}")
    ((kind, raw),) = value.items()
    if kind not in ("S", "N", "B"):
        raise _validation(f"key {name} must be S, N or B")
    return str(raw)


class Table:
    def __init__(self, request: dict[str, Any]) -> None:
        self.name: str = request["TableName"]
        self.request = request
        self.created = time.time()
        self.hash_key, self.range_key = self._schema(request["KeySchema"])
        self.indexes = {
            index["IndexName"]: self._schema(index["KeySchema"])
            for index in request.get("GlobalSecondaryIndexes", [])
            + request.get("LocalSecondaryIndexes", [])
        }
        self.ttl: dict[str, Any] | None = None
        # hash key value -> range key value ("" without one) -> item
        self.partitions: dict[str, dict[str, Item]] = {}

    @staticmethod
    def _schema(schema: list[dict[str, str]]) -> tuple[str, str | None]:
        hash_key = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
        ranges = [k["AttributeName"] for k in schema if k["KeyType"] == "RANGE"]
        return hash_key, ranges[0] if ranges else None

    def key_of(self, item: Item) -> tuple[str, str]:
        hash_value = _scalar(item.get(self.hash_key), self.hash_key)
        if self.range_key is None:
            return hash_value, ""
        return hash_value, _scalar(item.get(self.range_key), self.range_key)

    def key_item(self, item: Item) -> Item:
        names = [self.hash_key] + ([self.range_key] if self.range_key else [])
        return {name: item[name] for name in names if name in item}

    def get(self, key: Item) -> Item | None:
        hash_value, range_value = self.key_of(key)
        return self.partitions.get(hash_value, {}).get(range_value)

    def put(self, item: Item) -> Item | None:
        hash_value, range_value = self.key_of(item)
        partition = self.partitions.setdefault(hash_value, {})
        old = partition.get(range_value)
        partition[range_value] = item
        return old

    def delete(self, key: Item) -> Item | None:
        hash_value, range_value = self.key_of(key)
        partition = self.partitions.get(hash_value)
        if partition is None:
            return None
        old = partition.pop(range_value, None)
        if not partition:
            del self.partitions[hash_value]
        return old

    def all_items(self) -> list[Item]:
        return [item for partition in self.partitions.values() for item in partition.values()]

    def count(self) -> int:
        return sum(len(p) for p in self.partitions.values())

    def description(self, status: str = "ACTIVE") -> dict[str, Any]:
        request = self.request
        described: dict[str, Any] = {
            "TableName": self.name,
            "TableStatus": status,
            "KeySchema": request["KeySchema"],
            "AttributeDefinitions": request.get("AttributeDefinitions", []),
            "CreationDateTime": self.created,
            "ItemCount": self.count(),
            "TableSizeBytes": 0,
            "TableArn": f"arn:aws:dynamodb:standin:000000000000:table/{self.name}",
            "BillingModeSummary": {"BillingMode": request.get("BillingMode", "PAY_PER_REQUEST")},
        }
        if request.get("GlobalSecondaryIndexes"):
            described["GlobalSecondaryIndexes"] = [
                {**index, "IndexStatus": "ACTIVE", "ItemCount": 0}
                for index in request["GlobalSecondaryIndexes"]
            ]
        return described


def _sort_value(item: Item, name: str | None) -> tuple[int, Any]:
    if name is None or name not in item:
        return (0, "")
    kind, value = _comparable(item[name])
    return (1, value) if kind == "N" else (2, value)


# -- the operations ---------------------------------------------------------------------


class Standin:
    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.calls: Counter[str] = Counter()
        self.conditions_failed = 0
        self.conditions_unparsed = 0
        self._warned: set[str] = set()
        self._parsed: dict[tuple[str, str, str], Any] = {}
        self.operations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateTable": self.create_table,
            "DescribeTable": self.describe_table,
            "ListTables": self.list_tables,
            "DeleteTable": self.delete_table,
            "UpdateTimeToLive": self.update_time_to_live,
            "DescribeTimeToLive": self.describe_time_to_live,
            "GetItem": self.get_item,
            "PutItem": self.put_item,
            "DeleteItem": self.delete_item,
            "UpdateItem": self.update_item,
            "TransactWriteItems": self.transact_write_items,
            "TransactGetItems": self.transact_get_items,
            "BatchGetItem": self.batch_get_item,
            "BatchWriteItem": self.batch_write_item,
            "Query": self.query,
            "Scan": self.scan,
        }

    # parsing, cached: the hot path sends the same few expressions again and again

    def _parse(self, kind: str, request: dict[str, Any], field: str) -> Any:
        text = request.get(field)
        if not text:
            return None
        cache_key = (kind, text)
        if cache_key in self._parsed:
            tree = self._parsed[cache_key]
        else:
            try:
                parser = Parser(text)
                tree = parser.update() if kind == "update" else parser.condition()
                if not parser.done():
                    raise Unparsed("trailing tokens")
            except Unparsed:
                tree = None
                if text not in self._warned:
                    self._warned.add(text)
                    print(f"dynamo_standin: can not parse {field}: {text!r}", file=sys.stderr)
            self._parsed[cache_key] = tree
        if tree is None:
            if kind == "update":
                raise _validation(f"stand-in can not parse the update expression: {text}")
            self.conditions_unparsed += 1
            return None
        names = request.get("ExpressionAttributeNames") or {}
        return _bind(tree, request.get("ExpressionAttributeValues") or {}, names)

    def _check(self, request: dict[str, Any], old: Item | None) -> bool:
        condition = self._parse("condition", request, "ConditionExpression")
        if condition is None or holds(condition, old or {}):
            return True
        self.conditions_failed += 1
        return False

    def _table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise Fault("ResourceNotFoundException", f"Requested resource not found: {name}")
        return table

    # tables

    def create_table(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["TableName"] in self.tables:
            raise Fault("ResourceInUseException", f"Table already exists: {request['TableName']}")
        table = self.tables[request["TableName"]] = Table(request)
        return {"TableDescription": table.description()}

    def describe_table(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"Table": self._table(request["TableName"]).description()}

    def list_tables(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"TableNames": sorted(self.tables)}

    def delete_table(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        del self.tables[table.name]
        return {"TableDescription": table.description("DELETING")}

    def update_time_to_live(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        table.ttl = request["TimeToLiveSpecification"]
        return {"TimeToLiveSpecification": table.ttl}

    def describe_time_to_live(self, request: dict[str, Any]) -> dict[str, Any]:
        ttl = self._table(request["TableName"]).ttl
        if not ttl or not ttl.get("Enabled"):
            return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}
        return {
            "TimeToLiveDescription": {
                "TimeToLiveStatus": "ENABLED",
                "AttributeName": ttl["AttributeName"],
            }
        }

    # items

    def get_item(self, request: dict[str, Any]) -> dict[str, Any]:
        item = self._table(request["TableName"]).get(request["Key"])
        return {"Item": item} if item is not None else {}

    def put_item(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        old = table.get(request["Item"])
        if not self._check(request, old):
            raise self._condition_failed(request, old)
        table.put(request["Item"])
        return _returned(request, old, None, ())

    def delete_item(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        old = table.get(request["Key"])
        if not self._check(request, old):
            raise self._condition_failed(request, old)
        table.delete(request["Key"])
        return _returned(request, old, None, ())

    def update_item(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        old = table.get(request["Key"])
        if not self._check(request, old):
            raise self._condition_failed(request, old)
        new, touched = self._updated(request, old)
        table.put(new)
        return _returned(request, old, new, touched)

    def _updated(self, request: dict[str, Any], old: Item | None) -> tuple[Item, set[str]]:
        before = old or {}
        new: Item = dict(before) if old is not None else dict(request["Key"])
        touched: set[str] = set()
        for action, path, operand in self._parse("update", request, "UpdateExpression") or ():
            touched.add(str(path[0]))
            if action == "SET":
                set_path(new, path, evaluate(operand, before))
            elif action == "REMOVE":
                set_path(new, path, None)
            else:
                set_path(new, path, _add_or_delete(action, get_path(new, path), operand[1]))
        return new, touched

    def _condition_failed(self, request: dict[str, Any], old: Item | None) -> Fault:
        extra = {}
        if request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and old is not None:
            extra["Item"] = old
        return Fault("ConditionalCheckFailedException", "The conditional request failed", **extra)

    def transact_write_items(self, request: dict[str, Any]) -> dict[str, Any]:
        # Every condition first; then every write, or none.
        plan: list[tuple[str, Table, dict[str, Any], Item | None]] = []
        reasons: list[dict[str, Any]] = []
        failed = False
        for entry in request["TransactItems"]:
            ((kind, body),) = entry.items()
            table = self._table(body["TableName"])
            old = table.get(body["Item"] if kind == "Put" else body["Key"])
            if self._check(body, old):
                reasons.append({"Code": "None"})
            else:
                failed = True
                reason: dict[str, Any] = {
                    "Code": "ConditionalCheckFailed",
                    "Message": "The conditional request failed",
                }
                if body.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and old:
                    reason["Item"] = old
                reasons.append(reason)
            plan.append((kind, table, body, old))
        if failed:
            codes = ", ".join(r["Code"] for r in reasons)
            raise Fault(
                "TransactionCanceledException",
                f"Transaction cancelled, please refer cancellation reasons for specific reasons"
                f" [{codes}]",
                CancellationReasons=reasons,
            )
        for kind, table, body, old in plan:
            if kind == "Put":
                table.put(body["Item"])
            elif kind == "Update":
                table.put(self._updated(body, old)[0])
            elif kind == "Delete":
                table.delete(body["Key"])
        return {}

    def transact_get_items(self, request: dict[str, Any]) -> dict[str, Any]:
        responses = []
        for entry in request["TransactItems"]:
            body = entry["Get"]
            item = self._table(body["TableName"]).get(body["Key"])
            responses.append({"Item": item} if item is not None else {})
        return {"Responses": responses}

    def batch_get_item(self, request: dict[str, Any]) -> dict[str, Any]:
        responses: dict[str, list[Item]] = {}
        for name, wanted in request["RequestItems"].items():
            table = self._table(name)
            found = [table.get(key) for key in wanted["Keys"]]
            responses[name] = [item for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def batch_write_item(self, request: dict[str, Any]) -> dict[str, Any]:
        for name, writes in request["RequestItems"].items():
            table = self._table(name)
            for write in writes:
                if "PutRequest" in write:
                    table.put(write["PutRequest"]["Item"])
                else:
                    table.delete(write["DeleteRequest"]["Key"])
        return {"UnprocessedItems": {}}

    # reads of many items

    def query(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        condition = self._parse("condition", request, "KeyConditionExpression")
        if condition is None:
            raise _validation("Query needs a KeyConditionExpression the stand-in can parse")
        index = request.get("IndexName")
        hash_key, range_key = table.indexes[index] if index else (table.hash_key, table.range_key)
        partition = _equality(condition, hash_key)
        if index is None and partition is not None:
            candidates = list(table.partitions.get(_scalar(partition, hash_key), {}).values())
        else:
            candidates = table.all_items()
        matched = [item for item in candidates if hash_key in item and holds(condition, item)]
        matched.sort(key=lambda item: _sort_value(item, range_key))
        if request.get("ScanIndexForward") is False:
            matched.reverse()
        return self._page(table, request, matched, (hash_key, range_key) if index else None)

    def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self._table(request["TableName"])
        return self._page(table, request, table.all_items(), None)

    def _page(
        self,
        table: Table,
        request: dict[str, Any],
        items: list[Item],
        index_keys: tuple[str, str | None] | None,
    ) -> dict[str, Any]:
        start = request.get("ExclusiveStartKey")
        if start:
            wanted = table.key_of(start)
            for position, item in enumerate(items):
                if table.key_of(item) == wanted:
                    items = items[position + 1 :]
                    break
        limit = request.get("Limit")
        more = limit is not None and len(items) > limit
        page = items[:limit] if limit is not None else items
        scanned = len(page)
        condition = self._parse("condition", request, "FilterExpression")
        if condition is not None:
            page = [item for item in page if holds(condition, item)]
        answer: dict[str, Any] = {"Count": len(page), "ScannedCount": scanned}
        if request.get("Select") != "COUNT":
            answer["Items"] = page
        if more and page:
            last = table.key_item(items[limit - 1])  # type: ignore[operator]
            if index_keys:
                for name in index_keys:
                    if name and name in items[limit - 1]:  # type: ignore[operator]
                        last[name] = items[limit - 1][name]  # type: ignore[operator]
            answer["LastEvaluatedKey"] = last
        return answer

    # stats

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "conditions_failed": self.conditions_failed,
            "conditions_unparsed": self.conditions_unparsed,
            "items": {name: table.count() for name, table in self.tables.items()},
        }

    def reset(self) -> None:
        self.calls.clear()
        self.conditions_failed = self.conditions_unparsed = 0

    # ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if scope["method"] == "GET" or scope["path"] == "/stats":
            if scope["path"] == "/stats":
                answer = self.stats()
                if scope["method"] == "POST":
                    self.reset()
                await _respond(send, 200, _dumps(answer))
            else:
                await _respond(send, 200, b'{"healthy": "dynamo stand-in"}')
            return
        target = next((v for k, v in scope["headers"] if k == b"x-amz-target"), b"").decode()
        operation = target.rpartition(".")[2]
        self.calls[operation] += 1
        handler = self.operations.get(operation)
        try:
            if handler is None:
                raise Fault("UnknownOperationException", f"stand-in: no {operation or 'target'}")
            try:
                request = json.loads(body) if body else {}
            except ValueError:
                raise Fault("SerializationException", "body is not JSON") from None
            try:
                answer = handler(request)
            except (KeyError, TypeError, IndexError) as error:
                raise _validation(f"stand-in could not read the request: {error!r}") from None
        except Fault as fault:
            payload = {"__type": ERROR_PREFIX + fault.code, "message": fault.message}
            await _respond(send, 400, _dumps(payload | fault.extra))
            return
        await _respond(send, 200, _dumps(answer))


def _bind(tree: Any, values: dict[str, AV], names: dict[str, str]) -> Any:
    """The parsed tree with `:value` and `#name` placeholders replaced by this request's."""
    if isinstance(tree, tuple):
        if tree and tree[0] == "placeholder":
            if tree[1] not in values:
                raise _validation(f"undefined attribute value {tree[1]}")
            return ("value", values[tree[1]])
        return tuple(_bind(part, values, names) for part in tree)
    if isinstance(tree, list):
        return [_bind(part, values, names) for part in tree]
    if isinstance(tree, str) and tree.startswith("#"):  # only a name token starts with #
        if tree not in names:
            raise _validation(f"undefined attribute name {tree}")
        return names[tree]
    return tree


def _equality(condition: Any, name: str) -> AV | None:
    """The value `name` must equal for `condition` to hold (a key condition's hash key)."""
    if condition[0] == "and":
        return _equality(condition[1], name) or _equality(condition[2], name)
    if condition[0] == "cmp" and condition[1] == "=":
        left, right = condition[2], condition[3]
        if left[0] == "path" and left[1] == [name] and right[0] == "value":
            return right[1]  # type: ignore[no-any-return]
        if right[0] == "path" and right[1] == [name] and left[0] == "value":
            return left[1]  # type: ignore[no-any-return]
    return None


def _add_or_delete(action: str, current: AV | None, value: AV) -> AV | None:
    ((kind, raw),) = value.items()
    if kind == "N":
        if action != "ADD":
            raise _validation("DELETE takes a set")
        start = Decimal(current["N"]) if current and "N" in current else Decimal(0)
        return encode_number(DECIMAL.add(start, Decimal(raw)))
    if kind not in ("SS", "NS", "BS"):
        raise _validation(f"{action} takes a number or a set")
    members = list((current or {}).get(kind) or [])
    if action == "ADD":
        members += [m for m in raw if m not in members]
    else:
        members = [m for m in members if m not in raw]
    return {kind: members} if members else None


def _returned(
    request: dict[str, Any], old: Item | None, new: Item | None, touched: Any
) -> dict[str, Any]:
    wanted = request.get("ReturnValues", "NONE")
    if wanted == "ALL_OLD" and old:
        return {"Attributes": old}
    if wanted == "ALL_NEW" and new is not None:
        return {"Attributes": new}
    if wanted in ("UPDATED_OLD", "UPDATED_NEW"):
        source = (old or {}) if wanted == "UPDATED_OLD" else (new or {})
        picked = {name: source[name] for name in touched if name in source}
        return {"Attributes": picked} if picked else {}
    return {}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    args = parser.parse_args()

    import uvicorn

    has = importlib.util.find_spec
    uvicorn.run(
        Standin(),
        host=args.host,
        port=args.port,
        loop="uvloop" if has("uvloop") else "asyncio",
        http="httptools" if has("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
