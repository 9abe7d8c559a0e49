//! The parser: source text → [`FnDecl`]s, by recursive descent over a
//! hand-written tokenizer. Errors carry the line they were found on.

use crate::ast::{BinOp, Expr, FnDecl, Stmt};

/// A syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Int(i64),
    Ident(String),
    Punct(&'static str),
}

const PUNCTS: [&str; 16] = ["<=", ">=", "==", "!=", "<", ">", "=", "+", "-", "*", "(", ")", "{", "}", ",", ";"];

fn tokenize(source: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let mut tokens = Vec::new();
    let bytes = source.as_bytes();
    let (mut at, mut line) = (0, 1);
    while at < bytes.len() {
        let c = bytes[at];
        if c == b'\n' {
            line += 1;
            at += 1;
        } else if c.is_ascii_whitespace() {
            at += 1;
        } else if source[at..].starts_with("//") {
            at = source[at..].find('\n').map_or(bytes.len(), |end| at + end);
        } else if c.is_ascii_digit() {
            let end = source[at..].find(|c: char| !c.is_ascii_digit()).map_or(bytes.len(), |end| at + end);
            let value = source[at..end]
                .parse()
                .map_err(|_| ParseError { line, message: format!("integer `{}` out of range", &source[at..end]) })?;
            tokens.push((Token::Int(value), line));
            at = end;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = source[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(bytes.len(), |end| at + end);
            tokens.push((Token::Ident(source[at..end].to_owned()), line));
            at = end;
        } else if let Some(punct) = PUNCTS.iter().find(|punct| source[at..].starts_with(**punct)) {
            tokens.push((Token::Punct(punct), line));
            at += punct.len();
        } else {
            let found = source[at..].chars().next().unwrap_or('?');
            return Err(ParseError { line, message: format!("unexpected character `{found}`") });
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.tokens.get(self.at).or(self.tokens.last()).map_or(1, |(_, line)| *line)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { line: self.line(), message: message.into() })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(token, _)| token)
    }

    fn eat(&mut self, punct: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Punct(p)) if *p == punct);
        self.at += usize::from(found);
        found
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Ident(name)) if name == keyword);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, punct: &str) -> Result<(), ParseError> {
        if self.eat(punct) { Ok(()) } else { self.error(format!("expected `{punct}`, found {}", self.describe())) }
    }

    fn describe(&self) -> String {
        match self.peek() {
            Some(Token::Int(value)) => format!("`{value}`"),
            Some(Token::Ident(name)) => format!("`{name}`"),
            Some(Token::Punct(punct)) => format!("`{punct}`"),
            None => "end of input".to_owned(),
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Token::Ident(name)) if !KEYWORDS.contains(&name.as_str()) => {
                let name = name.clone();
                self.at += 1;
                Ok(name)
            }
            _ => self.error(format!("expected a name, found {}", self.describe())),
        }
    }

    fn function(&mut self) -> Result<FnDecl, ParseError> {
        if !self.eat_keyword("fn") {
            return self.error(format!("expected `fn`, found {}", self.describe()));
        }
        let name = self.ident()?;
        self.expect("(")?;
        let mut params = Vec::new();
        if !self.eat(")") {
            loop {
                params.push(self.ident()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(FnDecl { name, params, body: self.block()? })
    }

    fn block(&mut self) -> Result<Vec<Stmt>, ParseError> {
        self.expect("{")?;
        let mut statements = Vec::new();
        while !self.eat("}") {
            if self.peek().is_none() {
                return self.error("expected `}`, found end of input");
            }
            statements.push(self.statement()?);
        }
        Ok(statements)
    }

    fn statement(&mut self) -> Result<Stmt, ParseError> {
        if self.eat_keyword("let") {
            let name = self.ident()?;
            self.expect("=")?;
            let value = self.expr()?;
            self.expect(";")?;
            Ok(Stmt::Let(name, value))
        } else if self.eat_keyword("if") {
            self.if_rest()
        } else if self.eat_keyword("while") {
            let condition = self.expr()?;
            Ok(Stmt::While(condition, self.block()?))
        } else if self.eat_keyword("return") {
            let value = self.expr()?;
            self.expect(";")?;
            Ok(Stmt::Return(value))
        } else if matches!(self.tokens.get(self.at + 1), Some((Token::Punct("="), _))) {
            let name = self.ident()?;
            self.expect("=")?;
            let value = self.expr()?;
            self.expect(";")?;
            Ok(Stmt::Assign(name, value))
        } else {
            let value = self.expr()?;
            self.expect(";")?;
            Ok(Stmt::Expr(value))
        }
    }

    fn if_rest(&mut self) -> Result<Stmt, ParseError> {
        let condition = self.expr()?;
        let then = self.block()?;
        let otherwise = if !self.eat_keyword("else") {
            Vec::new()
        } else if self.eat_keyword("if") {
            vec![self.if_rest()?]
        } else {
            self.block()?
        };
        Ok(Stmt::If(condition, then, otherwise))
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.additive()?;
        let op = match self.peek() {
            Some(Token::Punct("<")) => BinOp::Lt,
            Some(Token::Punct("<=")) => BinOp::Le,
            Some(Token::Punct(">")) => BinOp::Gt,
            Some(Token::Punct(">=")) => BinOp::Ge,
            Some(Token::Punct("==")) => BinOp::Eq,
            Some(Token::Punct("!=")) => BinOp::Ne,
            _ => return Ok(lhs),
        };
        self.at += 1;
        Ok(Expr::Binary(op, Box::new(lhs), Box::new(self.additive()?)))
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = if self.eat("+") {
                BinOp::Add
            } else if self.eat("-") {
                BinOp::Sub
            } else {
                return Ok(lhs);
            };
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        while self.eat("*") {
            lhs = Expr::Binary(BinOp::Mul, Box::new(lhs), Box::new(self.unary()?));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("-") { Ok(Expr::Neg(Box::new(self.unary()?))) } else { self.primary() }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("(") {
            let inner = self.expr()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if let Some(Token::Int(value)) = self.peek() {
            let value = *value;
            self.at += 1;
            return Ok(Expr::Int(value));
        }
        let name = self.ident()?;
        if !self.eat("(") {
            return Ok(Expr::Var(name));
        }
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.expr()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(Expr::Call(name, args))
    }
}

const KEYWORDS: [&str; 6] = ["fn", "let", "if", "else", "while", "return"];

/// Parses a whole source file: a sequence of functions.
pub fn parse(source: &str) -> Result<Vec<FnDecl>, ParseError> {
    let mut parser = Parser { tokens: tokenize(source)?, at: 0 };
    let mut functions = Vec::new();
    while parser.peek().is_some() {
        functions.push(parser.function()?);
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fib() {
        let functions = parse("fn fib(n) {\n  if n < 2 { return n; }\n  return fib(n - 1) + fib(n - 2);\n}").unwrap();
        assert_eq!(functions.len(), 1);
        assert_eq!(functions[0].params, ["n"]);
        assert!(matches!(&functions[0].body[1], Stmt::Return(Expr::Binary(BinOp::Add, _, _))));
    }

    #[test]
    fn precedence_and_unary_minus() {
        let functions = parse("fn f(a) { return -a + 2 * 3 < 7; }").unwrap();
        let Stmt::Return(Expr::Binary(BinOp::Lt, lhs, _)) = &functions[0].body[0] else { panic!() };
        let Expr::Binary(BinOp::Add, neg, product) = &**lhs else { panic!() };
        assert!(matches!(&**neg, Expr::Neg(_)));
        assert!(matches!(&**product, Expr::Binary(BinOp::Mul, _, _)));
    }

    #[test]
    fn errors_name_the_line() {
        let error = parse("fn f(a) {\n  return a +;\n}").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("expected a name"), "{error}");
        assert_eq!(parse("fn f() { let x = 1 }").unwrap_err().message, "expected `;`, found `}`");
        assert!(parse("fn f() { return 1 $ 2; }").unwrap_err().message.contains('$'));
    }
}
