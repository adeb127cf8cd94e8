"""Tests for gru_jax.data.readers: every format on its sample in ../shared/data, malformed input.

Expected counts are the measured statistics in each dataset's SOURCE.md.
"""

import datetime
import pickle
import re

import numpy as np
import polars as pl
import pytest

from gru_jax.data import DataError, read_events, read_srgnn_split
from gru_jax.data.readers import chain_test_pairs, load_restricted_pickle

# -------------------------------------------------------------------------------------------
# Real samples.
# -------------------------------------------------------------------------------------------


def _counts(df: pl.DataFrame, key: str = "session") -> tuple[int, int, int]:
    return df.height, df[key].n_unique(), df["item"].n_unique()


def test_diginetica_sample(shared_data):
    df = read_events("diginetica", shared_data / "diginetica_sample/sample_train-item-views.csv")

    assert _counts(df) == (12_391, 2_986, 7_139)
    assert df["user"].drop_nulls().n_unique() == 1_270 and df["user"].null_count() == 7_681
    # First row: session 1, item 81766, 2016-05-09 + 526309 ms (the session starts that day).
    day = datetime.datetime(2016, 5, 9, tzinfo=datetime.UTC).timestamp()
    assert df.row(0, named=True) | {"user": None} == {
        "session": 1,
        "user": None,
        "item": 81766,
        "time": pytest.approx(day + 526.309),
    }


def test_otto_fixture_with_event_type_filter(shared_data):
    path = shared_data / "otto_fixture/train.jsonl"
    df = read_events("otto", path)
    clicks = read_events("otto", path, event_types=["clicks"])

    assert _counts(df) == (862, 20, 510)
    assert df["type"].value_counts().sort("type").rows() == [
        ("carts", 52),
        ("clicks", 800),
        ("orders", 10),
    ]
    assert _counts(clicks) == (800, 20, 508)
    assert df.row(0) == (0, 1517085, 1659304800.025, "clicks")


@pytest.mark.parametrize(
    "folder, train_sessions, train_events, n_items, pairs, test_sessions",
    [
        ("diginetica_srgnn_processed", 186_670, 906_140, 43_097, 60_858, 15_963),
        ("tmall_gcegnn", 65_286, 416_554, 40_727, 25_898, 1_027),
        ("nowplaying_gcegnn", 128_077, 953_381, 60_416, 89_824, 14_479),
        ("retailrocket_cotrec", 126_168, 685_984, 36_968, 15_132, 4_735),
    ],
)
def test_srgnn_splits(
    shared_data, folder, train_sessions, train_events, n_items, pairs, test_sessions
):
    train, prefixes, targets = read_srgnn_split(shared_data / folder)

    assert len(train) == train_sessions and sum(map(len, train)) == train_events
    assert len({x for s in train for x in s}) == n_items
    assert len(prefixes) == len(targets) == pairs
    # Rebuilding the test sessions from the augmented pairs gives SOURCE.md's session count.
    assert chain_test_pairs(prefixes, targets)[-1] + 1 == test_sessions


def test_srgnn_event_table(shared_data):
    df = read_events("srgnn", shared_data / "tmall_gcegnn")
    train, test = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")
    assert train.height == 416_554 and test["session"].n_unique() == 1_027
    # Each rebuilt session of length n yields n - 1 pairs.
    assert test.height - test["session"].n_unique() == 25_898
    assert df["time"].null_count() == df.height


@pytest.mark.parametrize(
    "path, events, users, items",
    [
        ("amazon_video_sasrec/Video.txt", 287_107, 31_013, 23_715),  # `user item` per line
        ("amazon_beauty_s3rec/Beauty.txt", 198_502, 22_363, 12_101),  # `user i1 i2 ...`
        ("yelp_s3rec/Yelp.txt", 316_354, 30_431, 20_033),
        ("lastfm_s3rec/LastFM.txt", 52_551, 1_090, 3_646),
    ],
)
def test_sequence_files(shared_data, path, events, users, items):
    df = read_events("sequences", shared_data / path)
    assert _counts(df, "user") == (events, users, items)
    assert df["time"].null_count() == events


def test_sequences_keep_line_order_per_user(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("2 5\n1 3 4\n2 6 7\n\n1 8\n")
    df = read_events("sequences", path)
    assert df.rows() == [(2, 5, None), (1, 3, None), (1, 4, None), (2, 6, None), (2, 7, None),
                         (1, 8, None)]  # fmt: skip


def test_recbole_movielens(shared_data):
    df = read_events("recbole", shared_data / "movielens_100k/ml-100k.inter")
    assert _counts(df, "user") == (100_000, 943, 1_682)
    assert df.row(0) == (196, 242, 881250949.0)


# -------------------------------------------------------------------------------------------
# gru4rec / csv / parquet on files written here.
# -------------------------------------------------------------------------------------------


@pytest.fixture()
def events() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "session": [1, 1, 2, 2, 2],
            "item": [10, 11, 10, 12, 13],
            "time": [100.0, 160.5, 50.0, 70.0, 90.0],
            "type": ["view", "view", "cart", "view", "view"],
        }
    )


def test_gru4rec_tsv(tmp_path, events):
    path = tmp_path / "events.tsv"
    events.rename({"session": "SessionId", "item": "ItemId", "time": "Time"}).with_columns(
        extra=pl.lit("x")
    ).write_csv(path, separator="\t")
    df = read_events("gru4rec", path)
    assert df.columns == ["session", "item", "time"]
    assert df.rows() == events.drop("type").rows()
    both = read_events("gru4rec", [path, path])
    assert both.height == 2 * events.height


def test_csv_with_mapping_units_and_date_strings(tmp_path, events):
    path = tmp_path / "events.csv"
    events.select(
        visitor=pl.col("session"),
        product=pl.col("item").cast(pl.String) + "a",
        ts_ms=(pl.col("time") * 1000).cast(pl.Int64),
        event=pl.col("type"),
    ).write_csv(path)
    df = read_events(
        "csv", path, user="visitor", item="product", time="ts_ms", type="event", time_unit="ms"
    )
    assert df.columns == ["user", "item", "time", "type"]
    assert df["item"].to_list()[:2] == ["10a", "11a"]
    np.testing.assert_allclose(df["time"].to_numpy(), events["time"].to_numpy())

    dates = tmp_path / "dates.csv"
    dates.write_text("s;i;when\n1;2;2024-01-01 00:00:10\n1;3;2024-01-01 00:01:00\n")
    df = read_events(
        "csv", dates, session="s", item="i", time="when", separator=";",
        time_format="%Y-%m-%d %H:%M:%S",
    )  # fmt: skip
    assert df["time"].to_list() == [1704067210.0, 1704067260.0]


def test_parquet_with_datetime_time(tmp_path, events):
    path = tmp_path / "events.parquet"
    events.with_columns(ts=pl.from_epoch(pl.col("time") * 1e6, time_unit="us")).write_parquet(path)
    df = read_events("parquet", path, session="session", item="item", time="ts", type="type")
    np.testing.assert_allclose(df["time"].to_numpy(), events["time"].to_numpy())
    assert df["type"].to_list() == events["type"].to_list()


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda df, p: df.drop("item").write_parquet(p), "item"),
        (lambda df, p: df.with_columns(time=pl.lit("noon")).write_parquet(p), "non-numeric"),
        (lambda df, p: df.clear().write_parquet(p), "no rows"),
        (lambda df, p: p.write_text("SessionId,ItemId\n1,2\n"), "not a readable Parquet"),
        (
            lambda df, p: df.with_columns(item=pl.Series([10, None, 10, 12, 13])).write_parquet(p),
            "item",
        ),
    ],
    ids=["missing-column", "text-time", "empty", "not-parquet", "null-item"],
)
def test_malformed_parquet_names_the_file_and_the_problem(tmp_path, events, write, message):
    path = tmp_path / "bad.parquet"
    write(events, path)
    with pytest.raises(DataError, match=message) as info:
        read_events("parquet", path, session="session", item="item", time="time")
    assert "bad.parquet" in str(info.value)


def test_csv_time_format_mismatch_names_the_file_line_and_value(tmp_path):
    path = tmp_path / "dates.csv"
    path.write_text("s,i,when\n1,2,2024-01-01 00:00:10\n1,3,01/01/2024\n")
    with pytest.raises(DataError) as info:
        read_events("csv", path, session="s", item="i", time="when",
                    time_format="%Y-%m-%d %H:%M:%S")  # fmt: skip
    assert "dates.csv:3:" in str(info.value) and "01/01/2024" in str(info.value)


# -------------------------------------------------------------------------------------------
# Malformed input: DataError names the file (and line) and the problem.
# -------------------------------------------------------------------------------------------

HEADER = "SessionId\tItemId\tTime\n"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("SessionId\tItemId\n1\t2\n", r"missing column\(s\) \['Time'\]"),
        (HEADER + "1\t2\t100\n1\t3\tabc\n", r":3: non-numeric value 'abc' in column 'Time'"),
        ("", "empty file"),
        (HEADER, "no data rows"),
        (HEADER + "1\t2\t100\n1\t3\t200\n2\t4", r":4: missing value in column 'Time'"),
    ],
    ids=["missing-column", "non-numeric-time", "empty", "header-only", "truncated-line"],
)
def test_malformed_gru4rec(tmp_path, content, problem):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=problem) as info:
        read_events("gru4rec", path)
    assert str(path) in str(info.value)


def test_mixed_id_types_are_kept_as_strings(tmp_path):
    path = tmp_path / "ids.tsv"
    rows = "".join(f"1\t{i}\t{i}\n" for i in range(20_000)) + "1\tabc\t5\n"
    path.write_text(HEADER + rows)
    df = read_events("gru4rec", path)
    assert df["item"].dtype == pl.String and df["item"][-1] == "abc"


def test_malformed_diginetica_date(tmp_path):
    path = tmp_path / "views.csv"
    path.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;10;2016-13-40\n")
    with pytest.raises(DataError, match=r"views.csv:2: eventdate '2016-13-40'"):
        read_events("diginetica", path)


def test_non_finite_diginetica_timeframe_names_its_line(tmp_path):
    path = tmp_path / "views.csv"
    path.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;5;10;2016-05-09\n1;NA;6;inf;2016-05-09\n"
    )
    with pytest.raises(DataError, match=r"views.csv:3: value inf in column 'timeframe'"):
        read_events("diginetica", path)


def test_a_short_row_is_reported_as_missing_a_value(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text("SessionId\tItemId\tTime\n1\t2\t100\n1\t3\n2\t4\t170\n")
    with pytest.raises(DataError, match=r"short.tsv:3: missing value in column 'Time'"):
        read_events("gru4rec", path)


def test_malformed_otto(tmp_path):
    good = '{"session": 1, "events": [{"aid": 5, "ts": 1000, "type": "clicks"}]}\n'
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text(good + '{"session": 2, "events": [{"aid": 5, "ts": 10')
    with pytest.raises(DataError, match=r"truncated.jsonl:2: invalid JSON"):
        read_events("otto", truncated)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(good + '{"session": 2, "events": [{"aid": 6, "type": "clicks"}]}\n')
    with pytest.raises(DataError, match=r"missing.jsonl:2: missing field\(s\) \['ts'\]"):
        read_events("otto", missing)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.jsonl: empty file"):
        read_events("otto", empty)


def test_truncated_sequence_line(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 2 3\n2\n")
    with pytest.raises(DataError, match=r"seq.txt:2: expected a user id followed by"):
        read_events("sequences", path)


def test_recbole_missing_field(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=r"x.inter: missing column\(s\) \['timestamp'\]"):
        read_events("recbole", path)


class _Evil:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def _srgnn_folder(tmp_path, train, test):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps(train))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(test))
    return tmp_path


@pytest.mark.parametrize(
    "train, test, problem",
    [
        (_Evil(), ([[1]], [2]), r"all_train_seq.txt: pickle refers to builtins.print"),
        ([[1, 2]], ({1: 2}, [2]), r"test.txt: prefixes must be a list"),
        ([[1, 2], {3, 4}], ([[1]], [2]), r"all_train_seq.txt: all_train_seq\[1\] is not a list"),
        ([[1, 2.5]], ([[1]], [2]), r"all_train_seq\[0\] is not a list of ints"),
        ([[1, 2]], ([[1]], ["x"]), r"test.txt: targets must be a list of ints"),
        ([[1, 2]], ([[1], [2]], [3]), r"test.txt: 2 prefixes but 1 targets"),
        ([[1, 2]], [[[1]], [2], [3]], r"test.txt: must hold a pair"),
        ([], ([[1]], [2]), r"all_train_seq.txt: all_train_seq is empty"),
        ([[1, 2**70]], ([[1]], [2]), r"all_train_seq holds item id 1180591620717411303424"),
        ([[1, 2]], ([[1]], [-(2**64)]), r"test.txt: targets holds item id"),
        ([[1, 2]], ([[1], []], [2, 1]), r"test.txt: prefixes\[1\] is empty"),
        ([[1, 2]], ([], []), r"test.txt: prefixes is empty"),
    ],
    ids=[
        "code",
        "dict",
        "set",
        "float",
        "str-target",
        "length",
        "triple",
        "empty-train",
        "huge-id",
        "huge-target",
        "empty-prefix",
        "empty-test",
    ],  # fmt: skip
)
def test_srgnn_pickles_holding_other_objects(tmp_path, capsys, train, test, problem):
    folder = _srgnn_folder(tmp_path / "split", train, test)
    with pytest.raises(DataError, match=problem):
        read_srgnn_split(folder)
    assert "unpickling ran code" not in capsys.readouterr().out


def test_truncated_and_empty_pickles(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(pickle.dumps([[1, 2], [3]])[:-5])
    with pytest.raises(DataError, match="p.txt: not a valid pickle"):
        load_restricted_pickle(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="p.txt: empty file"):
        load_restricted_pickle(path)


def test_missing_inputs_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_events("gru4rec", tmp_path / "nope.tsv")
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    (only_train / "all_train_seq.txt").write_bytes(pickle.dumps([[1, 2]]))
    with pytest.raises(DataError, match="test.txt: missing"):
        read_srgnn_split(only_train)
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_events("xml", tmp_path)


def test_csv_quoted_fields(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('session,item,time\n1,"shoe, red",10\n1,"hat ""x""",20\n')
    df = read_events("csv", path, session="session", item="item", time="time")
    assert df["item"].to_list() == ["shoe, red", 'hat "x"']


@pytest.mark.parametrize("value, line", [("nan", 3), ("inf", 2), ("-inf", 4)])
def test_non_finite_times_name_the_file_and_line(tmp_path, value, line):
    rows = ["1\t10\t100", "1\t11\t160", "2\t12\t170"]
    rows[line - 2] = rows[line - 2].rsplit("\t", 1)[0] + "\t" + value
    path = tmp_path / "events.tsv"
    path.write_text("SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n")
    with pytest.raises(
        DataError, match=rf"events.tsv:{line}: value .* in column 'Time' is not a finite number"
    ):
        read_events("gru4rec", path)


def test_non_finite_parquet_time_names_its_row(tmp_path, events):
    path = tmp_path / "events.parquet"
    events.with_columns(time=pl.Series([1.0, 2.0, float("nan"), 4.0, 5.0])).write_parquet(path)
    with pytest.raises(DataError, match=r"events.parquet:3: value nan in column 'time' is not"):
        read_events("parquet", path, session="session", item="item", time="time")


def test_a_row_with_extra_fields_names_its_line(tmp_path):
    path = tmp_path / "extra.tsv"
    path.write_text("SessionId\tItemId\tTime\n1\t2\t100\n1\t3\t160\t9\n2\t4\t170\n")
    with pytest.raises(DataError, match=r"extra.tsv:3: has 4 fields where the header has 3"):
        read_events("gru4rec", path)


@pytest.mark.parametrize(
    "second_line, message",
    [
        (
            '{"session": 2, "events": [{"aid": 1, "ts": "x", "type": "clicks"}]}',
            r'otto.jsonl:2: events\[0\]\["ts"\] must be int',
        ),
        ('{"session": 6}', r"otto.jsonl:2: .*events"),
        ('{"session": "s", "events": []}', r'otto.jsonl:2: "session" must be an integer'),
    ],
    ids=["text-ts", "no-events", "text-session"],
)
def test_otto_type_errors_name_the_line(tmp_path, second_line, message):
    path = tmp_path / "otto.jsonl"
    first = '{"session": 1, "events": [{"aid": 1, "ts": 1000, "type": "clicks"}]}'
    path.write_text(first + "\n" + second_line + "\n")
    with pytest.raises(DataError, match=message):
        read_events("otto", path)


# -------------------------------------------------------------------------------------------
# Separators, and ids that stand for missing values.
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\t", "\\t", "tab", "TAB"])
def test_a_tab_separator_as_users_type_it(tmp_path, separator):
    path = tmp_path / "events.tsv"
    path.write_text("s\ti\tt\n1\t5\t10\n1\t6\t20\n")
    df = read_events("csv", path, session="s", item="i", time="t", separator=separator)
    assert df.rows() == [(1, 5, 10.0), (1, 6, 20.0)]


@pytest.mark.parametrize("separator", [";;", "", "é", "\n", '"'])
def test_an_unusable_separator_is_refused_before_reading(tmp_path, separator):
    # The file does not exist: the separator is refused before any file is opened.
    with pytest.raises(DataError, match=f"^separator {re.escape(repr(separator))} must be one"):
        read_events("csv", tmp_path / "nope.csv", session="s", item="i", time="t",
                    separator=separator)  # fmt: skip


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "NA", " null ", "None", "N/A", "#N/A", "<NA>", " "]
)
@pytest.mark.parametrize("column", ["SessionId", "ItemId"])
def test_missing_value_markers_as_ids_name_file_line_column_and_value(tmp_path, column, value):
    rows = [{"SessionId": "1", "ItemId": "5", "Time": "100"} for _ in range(3)]
    rows[1][column] = value  # line 3 of the file
    path = tmp_path / "events.tsv"
    path.write_text(HEADER + "".join("\t".join(r.values()) + "\n" for r in rows))
    # "NaN" alone in a column makes polars read it as a float column: its value is then nan.
    shown = "nan" if value == "NaN" else repr(value)
    with pytest.raises(
        DataError,
        match=rf"^{re.escape(str(path))}:3: missing value {re.escape(shown)} in column "
        rf"'{column}' \(NaN, NA, null, None or blank is not an id\)$",
    ):
        read_events("gru4rec", path)


def test_missing_value_marker_after_the_inferred_rows_of_integer_ids(tmp_path):
    # 20,000 integer ids then "nan": polars' inferred int64 column fails, the text re-read finds it.
    path = tmp_path / "events.csv"
    rows = "".join(f"{i // 2},{i},{i}\n" for i in range(20_000)) + "7,nan,5\n"
    path.write_text("sess,item,ts\n" + rows)
    with pytest.raises(DataError, match=r"events.csv:20002: missing value 'nan' in column 'item'"):
        read_events("csv", path, session="sess", item="item", time="ts")


def test_ids_that_only_contain_a_marker_are_kept(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("s,i,t\nnano,banana,1\nnano,NA1,2\nnano,none-of-them,3\n")
    df = read_events("csv", path, session="s", item="i", time="t")
    assert df["item"].to_list() == ["banana", "NA1", "none-of-them"]


def test_empty_id_field_is_still_a_missing_value(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text(HEADER + "1\t5\t100\n1\t\t160\n")
    with pytest.raises(
        DataError, match=r"events.tsv:3: missing value in column 'ItemId' \(truncated line"
    ):
        read_events("gru4rec", path)


def test_missing_value_markers_in_diginetica_and_recbole(tmp_path):
    views = tmp_path / "views.csv"
    views.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;5;10;2016-05-09\n1;NA;null;20;2016-05-09\n"
    )  # a user of NA is no user; an item of null is refused
    with pytest.raises(DataError, match=r"views.csv:3: missing value 'null' in column 'item_id'"):
        read_events("diginetica", views)
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\nNone\t2\t1\n")
    with pytest.raises(
        DataError, match=r"x.inter:2: missing value 'None' in column 'user_id:token'"
    ):
        read_events("recbole", inter)


@pytest.mark.parametrize(
    "column, values, message",
    [
        ("ItemId", [1.0, None, 2.0], r":2: missing value in column 'ItemId' \(null\)$"),
        ("ItemId", [1.0, 2.0, float("nan")], r":3: missing value nan in column 'ItemId'"),
        ("SessionId", ["a", "None", "b"], r":2: missing value 'None' in column 'SessionId'"),
    ],
    ids=["null", "float-nan", "string-marker"],
)
def test_parquet_missing_ids_name_the_users_column(tmp_path, column, values, message):
    frame = {"SessionId": ["a", "a", "b"], "ItemId": [1.0, 2.0, 3.0], "Time": [1.0, 2.0, 3.0]}
    path = tmp_path / "events.parquet"
    pl.DataFrame(frame | {column: values}).write_parquet(path)
    with pytest.raises(DataError, match=message) as info:
        read_events("parquet", path, session="SessionId", item="ItemId", time="Time")
    assert "events.parquet" in str(info.value) and "truncated line" not in str(info.value)


def test_blank_lines_at_the_end_are_skipped_and_elsewhere_named(tmp_path):
    rows = "SessionId\tItemId\tTime\n1\t5\t10\n1\t6\t20\n"
    (tmp_path / "end.tsv").write_text(rows + "\n\r\n")
    events = read_events("gru4rec", tmp_path / "end.tsv")
    assert events["item"].to_list() == [5, 6] and events["time"].to_list() == [10.0, 20.0]

    (tmp_path / "middle.tsv").write_text("SessionId\tItemId\tTime\n1\t5\t10\n\n1\t6\t20\n")
    with pytest.raises(DataError, match=r"middle.tsv:3: missing value .*\(blank line"):
        read_events("gru4rec", tmp_path / "middle.tsv")


@pytest.mark.parametrize("line, message", [("2 7 NA 8", "'NA' in column 'item'"),
                                           ("None 7 8", "'None' in column 'user'")])  # fmt: skip
def test_missing_value_markers_in_sequences_name_the_line(tmp_path, line, message):
    (tmp_path / "seq.txt").write_text("1 5 6 7\n" + line + "\n")
    with pytest.raises(DataError, match=rf"seq.txt:2: missing value {message}"):
        read_events("sequences", tmp_path / "seq.txt")
