"""The household report as HTML (one self-contained page) and as PDF (WeasyPrint).

Every word a household reads is here or in the catalogue (reason texts and guidance),
in Chinese and English; the page carries no script and fetches nothing.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import jinja2

from features.catalogue import NO_ADVERSE
from household.outlook import ASSUMPTION_EN, ASSUMPTION_ZH
from household.report import HouseholdReport

LANGS = ("zh", "en")

#: Labels of the page, record kinds and record details, by language.
WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "个体工商户信用参考报告",
        "as_of": "报告日期",
        "status": "登记状态",
        "score": "参考分",
        "class": "风险分类",
        "model": "模型版本",
        "meaning": "分类说明",
        "meaning_text": "{cls} 类（参考分 {lo}–{hi}）：同类个体户中约 {rate} 在其后 {months} 个月内出现以下情况：{outcome}",
        "outcome": "公示较轻处罚以外的行政处罚、被标记为经营异常状态、列入严重违法失信名单、被吊销执照或被依职权注销。",
        "reasons": "影响参考分的原因",
        "served": "向平台提供",
        "records": "所依据的记录",
        "kind": "记录",
        "dated": "日期",
        "detail": "内容",
        "stops": "停止计入日期",
        "early": "最早可提前结束",
        "until_acted": "办理后恢复",
        "guidance": "可以做什么",
        "outlook": "如果其他情况不变",
        "day": "日期",
        "because": "原因",
        "stops_because": "记录停止计入",
        "early_because": "最早可申请信用修复 / 提前移出",
        "restored_because": "办理后恢复正常记载状态",
        "not_operating": "不在营",
        "queries": "查询记录",
        "at": "时间",
        "platform": "平台",
        "endpoint": "接口",
        "purpose": "用途",
        "answer": "答复类型",
        "no_queries": "无查询记录。",
        "marked_disputed": "（标注异议中）",
        "rights": "您的权利",
        "rights_text": "本报告的评分仅为信用参考，不是决定。平台不得仅凭本评分拒绝您；您可以要求人工复核，对记录提出异议，并附本人声明。",
        "review": "申请人工复核或提出异议",
        "not_scored": "当前不在营，平台仅获知登记状态，不提供评分。",
        "none": "无",
        "objections": "异议与本人声明",
        "opened": "提出日期",
        "statement": "本人声明（不向平台提供）",
        "result": "处理结果",
        "outcome_open": "处理中（平台收到的原因带有异议标记）",
        "outcome_upheld": "异议成立，记录已更正",
        "outcome_rejected": "异议不成立",
    },
    "en": {
        "title": "Credit reference report of an individual business",
        "as_of": "As of",
        "status": "Registration status",
        "score": "Reference score",
        "class": "Risk class",
        "model": "Model version",
        "meaning": "What the class means",
        "meaning_text": "Class {cls} (score {lo}-{hi}): of households in it, about {rate} had, within "
        "{months} months: {outcome}",
        "reasons": "Reasons behind the score",
        "served": "Given to platforms",
        "records": "The records behind them",
        "kind": "Record",
        "dated": "Dated",
        "detail": "What",
        "stops": "Stops counting on",
        "early": "Can end early from",
        "until_acted": "when restored",
        "guidance": "What you can do",
        "outlook": "If nothing else changes",
        "day": "On",
        "because": "Why",
        "stops_because": "records stop counting",
        "early_because": "earliest credit repair or early removal",
        "restored_because": "restored to normal after acting",
        "not_operating": "not operating",
        "queries": "Who asked about you",
        "at": "At",
        "platform": "Platform",
        "endpoint": "Service",
        "purpose": "Purpose",
        "answer": "Answer",
        "no_queries": "No request about you.",
        "marked_disputed": "(marked under objection)",
        "rights": "Your rights",
        "rights_text": "The score is a reference, not a decision. A platform may not decline you on "
        "it alone; you can ask for a human review, object to a record, and add a statement of "
        "your own.",
        "review": "Ask for a human review or object",
        "not_scored": "Not operating now: platforms learn the registration status only, no score.",
        "none": "none",
        "objections": "Your objections and statement",
        "opened": "Opened",
        "statement": "Your statement (never given to platforms)",
        "result": "Outcome",
        "outcome_open": "open (platforms see the reason marked as disputed)",
        "outcome_upheld": "upheld: the record was corrected",
        "outcome_rejected": "rejected",
    },
}

KINDS = {
    "registration": ("登记成立", "Registration"),
    "change": ("变更登记", "Change registration"),
    "annual_report": ("年度报告", "Annual report"),
    "abnormal_marking": ("经营异常状态", "Abnormal-operation marking"),
    "penalty": ("行政处罚", "Administrative penalty"),
    "serious_list": ("严重违法失信名单", "Serious illegal and dishonest list"),
    "spot_check": ("抽查检查", "Spot check"),
}
DETAILS = {
    "operator": ("经营者变更", "operator changed"),
    "address": ("经营场所变更", "premises changed"),
    "late": ("逾期报送", "filed late"),
    "missing": ("未报送", "not filed"),
    "report_not_filed": ("未按时报送年报", "report not filed"),
    "report_false": ("年报隐瞒真实情况、弄虚作假", "false report"),
    "unreachable": ("通过登记的经营场所无法联系", "unreachable at the premises"),
    "heavy_fine": ("较大数额罚款", "heavy fine"),
    "licence_revoked": ("吊销许可证件或营业执照", "licence revoked"),
    "closure_ordered": ("责令关闭", "closure ordered"),
    "practice_ban": ("限制从业", "practice ban"),
    "not_publicised": ("未按规定公示", "not publicised as required"),
    "problems_corrected": ("发现问题已责令整改", "problems found, ordered corrected"),
    "public_criticism": ("通报批评", "public criticism"),
    "fine": ("罚款", "fine"),
    "confiscation": ("没收违法所得、非法财物", "confiscation"),
    "licence_suspension": ("暂扣许可证件", "licence suspended"),
    "licence_revocation": ("吊销许可证件", "licence revoked"),
    "suspension_order": ("责令停产停业", "ordered to suspend"),
    "business_restriction": ("限制开展生产经营活动", "business restricted"),
    "warning": ("警告", "warning"),
}
STATUSES = {
    "operating": ("存续（在营）", "operating"),
    "suspended": ("歇业", "suspended"),
    "moved_out": ("迁出", "moved out"),
    "deregistered": ("注销", "deregistered"),
    "revoked": ("吊销", "revoked"),
    "cancelled": ("撤销", "cancelled"),
    "unknown": ("未登记", "not registered"),
}


def _pick(table: dict[str, tuple[str, str]], lang: str):
    i = LANGS.index(lang)

    def say(value: str) -> str:
        # penalty kinds are ';'-separated; anything unknown is shown as it is
        return "；".join(table.get(v, (v, v))[i] for v in value.split(";")) if value else ""

    return say


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def to_html(report: HouseholdReport, lang: str = "zh") -> str:
    """The report as one HTML page in ``lang``."""
    if lang not in LANGS:
        raise ValueError(f"language must be one of {', '.join(LANGS)}")
    w = WORDS[lang]
    meaning = ""
    if report.meaning is not None:
        m = report.meaning
        meaning = w["meaning_text"].format(
            cls=m.risk_class,
            lo=m.score_from,
            hi=m.score_to,
            rate=f"{m.observed_rate:.1%}",
            months=m.horizon_months,
            outcome=w.get("outcome", m.outcome),
        )
    codes = sorted({e.reason for e in report.evidence} | set(report.reasons))
    return (
        _environment()
        .get_template("report.html")
        .render(
            r=report,
            w=w,
            lang=lang,
            en=lang == "en",
            meaning=meaning,
            assumption=ASSUMPTION_EN if lang == "en" else ASSUMPTION_ZH,
            codes=codes,
            kind=_pick(KINDS, lang),
            detail=_pick(DETAILS, lang),
            status=_pick(STATUSES, lang),
            day=lambda d: d.isoformat() if isinstance(d, date) else "",
            moment=_moment,
            disputed={c for o in report.objections if not o.get("outcome") for c in o["reasons"]},
            no_adverse=NO_ADVERSE.code,
            nothing_adverse=NO_ADVERSE.text_en if lang == "en" else NO_ADVERSE.text_zh,
        )
    )


def _moment(at: str) -> str:
    """An audit time (ISO, UTC) to the minute, as a person reads it."""
    return f"{at[:10]} {at[11:16]} UTC"


def to_pdf(html: str, out: Path) -> None:
    """Print the page to PDF."""
    import weasyprint  # heavy (Pango, fonts): loaded only when a PDF is printed

    weasyprint.HTML(string=html).write_pdf(out)
