"""Static attributes of synthetic households: place, industry, age, names, codes.

Distributions follow ``../shared/DOMAIN.md`` §1 (city sizes, Hangzhou's age profile:
mean 4.69 years, 18.78% younger than one year); industry and organisational-form
shares are [assumption]s of the generator.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from stdnum.cn import ric, uscc
from stdnum.exceptions import ValidationError

from records.geography import CITIES
from records.identity import id_hmac
from records.schema import INDUSTRIES
from synth.process import Population

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_IDENT_SPACE = 31**9
_IDENT_MULT = 1_000_000_007  # coprime with 31: index -> identifier is a bijection

INDUSTRY_SHARES = np.array(
    [0.02, 0.05, 0.03, 0.48, 0.05, 0.17, 0.02, 0.03, 0.02, 0.10, 0.01, 0.02]
)  # [assumption] in INDUSTRIES order; retail (F) and catering (H) dominate
FAMILY_SHARE = 0.08  # [assumption] 家庭经营

SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = list(
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚华建国志红玉海燕文俊鹏飞雪梅宇浩晨辉林斌波婷琳丹颖慧佳欣怡涵轩然桐诺"
)
BRAND = list("鑫福顺兴佳和盛源美乐家旺隆祥瑞康泰华新恒达丰宏金利丽嘉荣昌盈")
SUFFIX = {
    "A": ["种植场", "养殖场", "农资店"],
    "C": ["加工厂", "制衣坊", "五金加工部"],
    "E": ["装修队", "建材工程部"],
    "F": ["便利店", "商行", "百货店", "水果店", "烟酒店", "超市", "副食店"],
    "G": ["货运部", "物流服务部", "搬家服务部"],
    "H": ["小吃店", "面馆", "餐馆", "烧烤店", "奶茶店", "早餐店"],
    "I": ["电脑维修部", "网络科技工作室"],
    "L": ["家政服务部", "广告部"],
    "M": ["设计工作室", "技术服务部"],
    "O": ["理发店", "洗衣店", "家电维修部", "美容店", "修车店"],
    "P": ["培训中心", "艺术工作室"],
    "R": ["棋牌室", "台球室", "文化传播工作室"],
}
ROADS = [
    *("人民路", "解放路", "建设路", "中山路", "和平路", "新华路", "长江路", "文化路", "青年路"),
    *("胜利路", "东风路", "团结路", "幸福路", "振兴路", "科技路", "光明路", "滨河路", "学府路"),
    *("工业路", "商业街"),
]


def draw_population(
    n: int, end_day: int, frailty_shape: float, rng: np.random.Generator
) -> tuple[Population, dict]:
    """Draw the static attributes of ``n`` households.

    Returns:
        The population the process needs, and the place attributes (district per
        household) the records need.
    """
    weights = np.array([c.households_m for c in CITIES])
    city = rng.choice(len(CITIES), size=n, p=weights / weights.sum()).astype(np.int8)
    district_idx = np.floor(
        rng.random(n) * np.array([len(c.districts) for c in CITIES])[city]
    ).astype(np.int16)
    industry = rng.choice(len(INDUSTRIES), size=n, p=INDUSTRY_SHARES).astype(np.int8)
    # Age at the end date if the household were still operating: a young mass and a
    # long tail, tuned so that the operating population matches Hangzhou's profile.
    young = rng.random(n) < 0.127
    age = np.where(young, rng.random(n), 0.9 + rng.gamma(1.38, 3.75, size=n))
    age = np.minimum(age, 38.0)
    registered_day = end_day - np.floor(age * 365.25).astype(np.int64)
    z = rng.gamma(frailty_shape, 1.0 / frailty_shape, size=n)  # Gamma(k, rate k): mean 1
    pop = Population(industry=industry, city=city, registered_day=registered_day, z=z)
    return pop, {"district_idx": district_idx, "family": rng.random(n) < FAMILY_SHARE}


def division_codes(city: np.ndarray, district_idx: np.ndarray) -> np.ndarray:
    table = [[code for code, _ in c.districts] for c in CITIES]
    return np.array(
        [table[c][d] for c, d in zip(city.tolist(), district_idx.tolist(), strict=True)]
    )


def district_names(city: np.ndarray, district_idx: np.ndarray) -> np.ndarray:
    table = [[name for _, name in c.districts] for c in CITIES]
    return np.array(
        [table[c][d] for c, d in zip(city.tolist(), district_idx.tolist(), strict=True)]
    )


def usccs(global_index: np.ndarray, division: np.ndarray) -> list[str]:
    """Valid household USCCs: ``92`` + division + a unique identifier + check character.

    The check character comes from ``stdnum.cn.uscc`` (GB 32100-2015).
    """
    v = (global_index.astype(object) * _IDENT_MULT + 12_345) % _IDENT_SPACE
    out = []
    for num, div in zip(v.tolist(), division.tolist(), strict=True):
        ident = []
        for _ in range(9):
            num, rem = divmod(num, 31)
            ident.append(USCC_CHARSET[rem])
        body = "92" + div + "".join(reversed(ident))
        out.append(body + uscc.calc_check_digit(body))
    return out


def id_numbers(
    district: np.ndarray, registered_day: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """A plausible resident ID number per operator (aged 20 to 60 at registration)."""
    n = len(district)
    birth = registered_day - np.floor((20 + rng.random(n) * 40) * 365.25).astype(np.int64)
    birth_s = birth.astype("datetime64[D]").astype(str)
    seq = rng.integers(0, 1000, size=n)
    return [
        id_number(div, b, s)
        for div, b, s in zip(district.tolist(), birth_s.tolist(), seq.tolist(), strict=True)
    ]


def id_hmacs(
    district: np.ndarray, registered_day: np.ndarray, rng: np.random.Generator, secret: bytes
) -> list[str]:
    """The stored keyed hash of each operator's ID number; the numbers are dropped."""
    return [id_hmac(number, secret) for number in id_numbers(district, registered_day, rng)]


def id_number(district: str, birth: str, seq: int) -> str:
    """A GB 11643 resident ID number: a birth-place code that existed in the birth year
    (:func:`birthplace_code`), the birth date (YYYY-MM-DD), a sequence, and its check
    character (stdnum's ``calc_check_digit`` takes the number *with* a check position,
    which it drops)."""
    place = birthplace_code(district, int(birth[0:4]))
    body = f"{place}{birth[0:4]}{birth[5:7]}{birth[8:10]}{seq:03d}"
    return body + ric.calc_check_digit(body + "0")


@functools.cache
def birthplace_code(district: str, year: int) -> str:
    """The county code an ID number issued for a birth in ``year`` can carry: the
    household's district if it existed then (many of today's districts did not), else
    the first code of the same prefecture that did, else a Beijing code that always has.
    Validity is stdnum's (its table of county codes and the years they were in use)."""
    candidates = [district, *(f"{district[:4]}{i:02d}" for i in range(1, 100)), "110101"]
    for code in candidates:
        probe = f"{code}{year}0101001"
        try:
            ric.validate(probe + ric.calc_check_digit(probe + "0"))
        except (ValidationError, KeyError):  # KeyError: a county stdnum knows no name of
            continue
        return code
    return "110101"


def _pick(pool: list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(pool).take(pa.array(idx))


def operator_names(rng: np.random.Generator, n: int) -> pa.Array:
    sur = _pick(SURNAMES, rng.integers(0, len(SURNAMES), n))
    g1 = _pick(GIVEN, rng.integers(0, len(GIVEN), n))
    g2 = _pick(
        [*GIVEN, ""], np.where(rng.random(n) < 0.45, len(GIVEN), rng.integers(0, len(GIVEN), n))
    )
    return pc.binary_join_element_wise(sur, g1, g2, "")


def shop_names(rng: np.random.Generator, districts: np.ndarray, industry: np.ndarray) -> pa.Array:
    n = len(industry)
    b1 = _pick(BRAND, rng.integers(0, len(BRAND), n))
    b2 = _pick(BRAND, rng.integers(0, len(BRAND), n))
    suffix_pool = [s for ind in INDUSTRIES for s in SUFFIX[ind]]
    offsets = np.cumsum([0] + [len(SUFFIX[i]) for i in INDUSTRIES])
    sizes = np.diff(offsets)
    sfx_idx = offsets[industry] + np.floor(rng.random(n) * sizes[industry]).astype(np.int64)
    names = pc.binary_join_element_wise(
        pa.array(districts), b1, b2, _pick(suffix_pool, sfx_idx), ""
    )
    has_name = rng.random(n) < 0.7  # a household may register without a 字号
    return pc.if_else(pa.array(has_name), names, pa.nulls(n, pa.string()))


def addresses(rng: np.random.Generator, city: np.ndarray, districts: np.ndarray) -> pa.Array:
    n = len(city)
    prov = _pick([c.province_zh for c in CITIES], city)
    cname = _pick([c.name_zh + "市" for c in CITIES], city)
    road = _pick(ROADS, rng.integers(0, len(ROADS), n))
    num = pa.array((rng.integers(1, 1000, n)).astype(str).astype(object))
    return pc.binary_join_element_wise(
        prov, cname, pa.array(districts), road, num, pa.scalar("号"), ""
    )
